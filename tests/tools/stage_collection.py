"""Copy the checkout to <root>/ansible_collections/hybridcloud/migration, as ansible-test needs.

ansible-test only runs inside such a path, and it scans every file it finds there, so only
the files git knows (tracked, or new and not ignored) are copied: never .venv/, .build/,
tests/output/ or .ansible/. The copy is made afresh each time so deleted files vanish too.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys


def stage(repo: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, check=True, capture_output=True,
    ).stdout.decode()
    target = root / "ansible_collections" / "hybridcloud" / "migration"
    if target.exists():
        shutil.rmtree(target)
    for name in filter(None, listing.split("\0")):
        source = repo / name
        if source.is_file():  # tracked files deleted in the work tree are skipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    # ansible-test lists files through git when it finds a repository: give it one.
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    return target


if __name__ == "__main__":
    print(stage(pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(sys.argv[2]).resolve()))
