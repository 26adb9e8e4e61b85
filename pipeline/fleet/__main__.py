"""``python -m pipeline.fleet``: see :mod:`pipeline.fleet.cli`."""

import sys

from pipeline.fleet.cli import main

if __name__ == "__main__":
    sys.exit(main())
