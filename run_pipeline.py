#!/usr/bin/env python3
"""Run the segmentation pipeline. See ``python run_pipeline.py --help`` and the README."""

import sys

if __name__ == "__main__":
    from pipeline import startup_signals

    # before any other import: a Ctrl-C while they run ends the program with one line and
    # 130 (see pipeline/startup_signals.py), never with a traceback
    startup_signals.defer()
    try:
        from pipeline.cli import main

        code = main()
    except KeyboardInterrupt:
        print("error: aborted by signal", file=sys.stderr)
        code = 130
    sys.exit(code)
