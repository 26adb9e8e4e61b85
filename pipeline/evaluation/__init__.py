"""Scoring of saved pipeline results; ``python -m pipeline.evaluate`` is the command line.

* :mod:`~pipeline.evaluation.records`: reading and checking ``--save-results`` records and
  the ground-truth directory, :func:`~pipeline.evaluation.records.frame_record`.
* :mod:`~pipeline.evaluation.instances`: COCO mask / box AP (pycocotools' ``COCOeval``).
* :mod:`~pipeline.evaluation.semantic`: the FCN paper's semantic scores.
* :mod:`~pipeline.evaluation.tracking`: HOTA, CLEAR MOT and Identity metrics (pure functions
  on per-frame similarity matrices, identical to TrackEval's).
* :mod:`~pipeline.evaluation.tracks`: tracked predictions against ground-truth tracks
  (mask IoU, per class and combined).
* :mod:`~pipeline.evaluation.mots`: the MOTS text format (KITTI-MOTS style), write and read.
* :mod:`~pipeline.evaluation.panoptic`: Panoptic Quality (PQ, SQ, RQ; COCO panopticapi rules);
  :mod:`~pipeline.evaluation.panoptic_records` scores saved panoptic results with it and, when
  their things carry track ids, with :mod:`~pipeline.evaluation.stq` (STQ, the video metric).
* :mod:`~pipeline.evaluation.model_study`, :mod:`~pipeline.evaluation.tracking_study`: the
  held-out studies behind the docs' accuracy figures.

Nothing is imported here, so importing one module does not load the others (pycocotools,
scipy and Pillow are loaded by the modules that need them).
"""
