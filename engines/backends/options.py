"""The options every backend shares, validated in one place, and how they are passed.

Every backend (PyTorch, ONNX Runtime, OpenVINO, TensorRT) loads the same registry model
the same way and filters Mask R-CNN detections with the same torchvision settings, so
those options live here once:

* :class:`ModelOptions`: which weights / classes / seed, the input resize, the thread
  budget of the model's process, and progress output;
* :class:`DetectionOptions`: the Mask R-CNN thresholds (``None`` keeps the model's own).

Callers keep passing them flat (``create_backend(..., min_size=96, box_score_thresh=0.3)``);
a backend constructor collects its flat keywords with :meth:`ModelOptions.take` (or takes
a ready ``model_options=ModelOptions(...)``). What is left over is the backend's own
options (ORT's ``tensorrt_ep``, OpenVINO's and TensorRT's ``precision``, ...), declared as
keyword-only parameters of its constructor. A name that is neither fails with one line
naming the backend and every option it knows (:func:`check_option_names`).

INT8 calibration is shared too: OpenVINO and TensorRT calibrate on the same reserved
frames by default (:data:`DEFAULT_CALIBRATION_SOURCE`; the caller opens it, engines never
open sources).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from engines.errors import ModelError

__all__ = [
    "CALIBRATION_SEEDS",
    "DEFAULT_CALIBRATION_FRAMES",
    "DEFAULT_CALIBRATION_SOURCE",
    "DetectionOptions",
    "ModelOptions",
    "check_option_names",
    "known_options",
]

#: Synthetic scene seeds reserved for INT8 calibration (never for training or evaluation).
CALIBRATION_SEEDS = range(3000, 4000)
#: What callers open for calibration frames when none are given (640x480, the demo size).
DEFAULT_CALIBRATION_SOURCE = "synthetic://?seed=3000&size=640x480&fps=1&frames=64"
#: At most this many calibration frames are used unless told otherwise.
DEFAULT_CALIBRATION_FRAMES = 64

#: The keyword that passes a ready ``ModelOptions`` to a backend constructor.
_MODEL_OPTIONS_KEYWORD = "model_options"


def _check_int(name: str, value: Any, low: int | None) -> int | None:
    """``value`` as an int (None passes), at least ``low``; ``ModelError`` otherwise."""
    if value is None:
        return None
    # bool is an Integral, but True as a count or a seed is a mistake, not a 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ModelError(f"option {name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ModelError(f"option {name} must be at least {low}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: Any) -> float | None:
    """``value`` as a float in [0, 1] (None passes); ``ModelError`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ModelError(f"option {name} must be a number from 0 to 1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DetectionOptions:
    """How a Mask R-CNN filters its proposals and detections (ignored by semantic models).

    ``None`` keeps the model's own setting: torchvision's are 0.05, 0.5, 100, 1000 and
    1000 in field order; the demo model sets its own (see ``engines.models.demo``).
    """

    box_score_thresh: float | None = None  # detections scoring below this are dropped
    box_nms_thresh: float | None = None  # IoU of the per-class NMS over detections
    box_detections_per_img: int | None = None  # at most this many detections per image
    rpn_pre_nms_top_n_test: int | None = None  # proposals per level before the RPN's NMS
    rpn_post_nms_top_n_test: int | None = None  # proposals per image after it

    def __post_init__(self) -> None:
        # normalised in place (numpy scalars, ints for floats) so equal settings compare equal
        checked = {
            "box_score_thresh": _check_fraction("box_score_thresh", self.box_score_thresh),
            "box_nms_thresh": _check_fraction("box_nms_thresh", self.box_nms_thresh),
            "box_detections_per_img": _check_int(
                "box_detections_per_img", self.box_detections_per_img, 1
            ),
            "rpn_pre_nms_top_n_test": _check_int(
                "rpn_pre_nms_top_n_test", self.rpn_pre_nms_top_n_test, 1
            ),
            "rpn_post_nms_top_n_test": _check_int(
                "rpn_post_nms_top_n_test", self.rpn_post_nms_top_n_test, 1
            ),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def apply(self, model: nn.Module) -> dict[str, float | int]:
        """Set these on a torchvision Mask R-CNN (its ``rpn`` / ``roi_heads``) and return the
        settings now in effect, ``None`` ones filled in with the model's own."""
        from engines.split import configure_detection  # torchvision: only when a model loads

        return configure_detection(model, **dataclasses.asdict(self))


_DETECTION_NAMES = tuple(f.name for f in dataclasses.fields(DetectionOptions))


@dataclass(frozen=True)
class ModelOptions:
    """What every backend is told about the model it loads (defaults: the model's own).

    ``num_classes``: classes including background (random weights, or to check a
    checkpoint); ``seed``: of random weights; ``min_size`` / ``max_size``: the resize
    (shorter side to ``min_size`` unless the longer would exceed ``max_size``; ``None``:
    the registry's, or an export's recorded size); ``threads``: the model's thread budget
    in this process (``None``: the runtime's default); ``progress``: print download /
    export / build progress lines; ``detection``: see :class:`DetectionOptions`.
    """

    num_classes: int | None = None
    seed: int | None = None  # None: engines.weights.DEFAULT_SEED
    min_size: int | None = None
    max_size: int | None = None
    threads: int | None = None
    progress: bool = False
    detection: DetectionOptions = field(default_factory=DetectionOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_classes", _check_int("num_classes", self.num_classes, 1))
        object.__setattr__(self, "seed", _check_int("seed", self.seed, None))
        object.__setattr__(self, "min_size", _check_int("min_size", self.min_size, 1))
        object.__setattr__(self, "max_size", _check_int("max_size", self.max_size, 1))
        object.__setattr__(self, "threads", _check_int("threads", self.threads, 1))
        if not isinstance(self.progress, bool):
            raise ModelError(f"option progress must be true or false, got {self.progress!r}")
        if not isinstance(self.detection, DetectionOptions):
            raise ModelError(f"option detection must be a DetectionOptions, got {self.detection!r}")
        # only when both are given: one alone is checked against the model's default later
        if self.min_size is not None and self.max_size is not None:
            if self.max_size < self.min_size:
                raise ModelError(
                    f"option max_size ({self.max_size}) is below min_size ({self.min_size})"
                )

    @staticmethod
    def names() -> tuple[str, ...]:
        """Every flat keyword these options are given by, detection settings included."""
        own = tuple(f.name for f in dataclasses.fields(ModelOptions) if f.name != "detection")
        return own + _DETECTION_NAMES

    @classmethod
    def from_flat(cls, flat: dict[str, Any], base: ModelOptions | None = None) -> ModelOptions:
        """``base`` (default: all defaults) with the flat keywords in ``flat`` replaced.

        Raises ``ModelError`` for a name that is not one of :meth:`names` or a bad value.
        """
        base = base if base is not None else cls()
        unknown = [k for k in flat if k not in cls.names()]
        if unknown:
            raise ModelError(f"unknown option '{unknown[0]}' (known: {', '.join(cls.names())})")
        detection = {k: v for k, v in flat.items() if k in _DETECTION_NAMES}
        own = {k: v for k, v in flat.items() if k not in _DETECTION_NAMES}
        return dataclasses.replace(
            base, **own, detection=dataclasses.replace(base.detection, **detection)
        )

    @classmethod
    def take(
        cls, backend: str, backend_cls: type, base: ModelOptions | None, flat: dict[str, Any]
    ) -> ModelOptions:
        """What a backend constructor calls with its ``model_options`` and leftover ``**flat``
        keywords: the options, or the one-line ``unknown option`` error of that backend."""
        check_option_names(backend, backend_cls, flat)
        if base is not None and not isinstance(base, ModelOptions):
            raise ModelError(f"model_options must be a ModelOptions, got {type(base).__name__}")
        return cls.from_flat(flat, base)

    def flat(self) -> dict[str, Any]:
        """These options as the flat keywords ``create_backend`` takes."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(dataclasses.asdict(out.pop("detection")))
        return out


def known_options(backend_cls: type) -> list[str]:
    """Every option a backend class takes: the shared ones, then its own keyword-only ones."""
    own = [
        p.name
        for p in inspect.signature(backend_cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != _MODEL_OPTIONS_KEYWORD
    ]
    return [*ModelOptions.names(), _MODEL_OPTIONS_KEYWORD, *own]


def check_option_names(backend: str, backend_cls: type, options: dict[str, Any]) -> None:
    """``ModelError`` naming the first option ``backend_cls`` does not take, and all it does."""
    known = known_options(backend_cls)
    for key in options:
        if key not in known:
            raise ModelError(
                f"unknown option '{key}' for backend {backend} (known: {', '.join(known)})"
            )
