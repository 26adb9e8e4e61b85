"""Multi-object tracking: stable per-stream ids for instances, from masks, boxes and motion.

``tracker.py`` is one stream's tracker (pure), ``association.py`` its costs and matching,
``streams.py`` the run's trackers and frame clocks. The publish stage and the in-process
reference path call :class:`RunTracking` on frames in order, so both give the same ids.
"""

from pipeline.tracking.association import Crop
from pipeline.tracking.streams import FrameClock, RunTracking
from pipeline.tracking.tracker import Assignment, Detections, StreamTracker, TrackerParams

__all__ = ["Assignment", "Crop", "Detections", "FrameClock", "RunTracking", "StreamTracker", "TrackerParams"]
