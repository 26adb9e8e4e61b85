"""segstream: real-time video segmentation streaming pipeline."""

__version__ = "0.1.0"
