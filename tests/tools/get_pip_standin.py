"""Stand-in for the get-pip.py script ansible-test bootstraps its virtual environments with.

ansible-test downloads get-pip.py from ci-files.testing.ansible.com, which this network
cannot reach, and uses a cached copy at ~/.ansible/test/cache/get_pip_<version>.py when
there is one. `make deps` puts this file there. It installs pip the standard-library way
(ensurepip), then runs ``pip install`` with the arguments ansible-test gave, so the pip
configuration of the machine (its package index) applies.
"""

from __future__ import annotations

import os
import subprocess
import sys

# ensurepip brings pip without setuptools/wheel; these flags mean nothing to `pip install`.
IGNORED = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    env = dict(os.environ)
    # ensurepip's in-process bootstrap points PIP_CONFIG_FILE at /dev/null; never inherit that.
    if env.get("PIP_CONFIG_FILE") == os.devnull:
        del env["PIP_CONFIG_FILE"]
    packages = [arg for arg in sys.argv[1:] if arg not in IGNORED]
    if packages:
        subprocess.check_call([sys.executable, "-m", "pip", "install", *packages], env=env)


if __name__ == "__main__":
    main()
