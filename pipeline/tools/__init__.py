"""Command-line tools that need both layers (``engines`` models plus ``pipeline`` sources).

``engines`` imports nothing from ``pipeline``; a tool that, say, builds engines *and* opens a
video source for their calibration therefore lives here, above both.
"""
