"""``python -m gateway.simulator``: the simulator without the ``ulak`` CLI around it."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
