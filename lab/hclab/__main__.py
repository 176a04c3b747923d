"""``python -m lab.hclab``: the lab's command line (see ``lab.hclab.cli``)."""

from __future__ import annotations

import sys

from lab.hclab.cli import main

if __name__ == "__main__":
    sys.exit(main())
