#!/usr/bin/env python3
"""Run the segmentation pipeline. See ``python run_pipeline.py --help`` and the README."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
