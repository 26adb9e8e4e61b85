"""INT8 for the OpenVINO backend: NNCF post-training quantisation of the split, cached on disk.

Every graph of the split is quantised (``nncf.quantize`` on the ``ov.Model`` read from the
ONNX export), with calibration inputs taken from real frames:

* ``dense`` / ``semantic``: the frames themselves, prepared as the pipeline prepares them
  (``engines.transform.prepare_image`` with the backend's ``ModelSpec``), one per sample;
* ``box_head`` / ``mask_head``: the RoI features the eager glue actually feeds them, recorded
  while the FP32 graphs run the same frames (an evenly spaced subset of the RoIs of each
  frame, which keeps the memory small). Unlike TensorRT's calibrator, which can only feed
  the network inputs, this calibrates the heads on what they really see.

The quantised IR (``.xml`` + ``.bin``, weights kept fp32 where not quantised) is cached in
``<cache root>/openvino/<model>-<weights tag>/int8-<key digest>/`` with ``key.json``; the key
holds what the ONNX cache is keyed by (each graph's SHA-256, so the weights and opset)
plus the OpenVINO and NNCF versions, precision, the calibration identity (the
``calibration_source`` name, or a SHA-256 of the prepared frames), the number of frames, the
input size and the detection settings (they decide which RoIs calibrate the heads). A
directory whose ``key.json`` differs is never used; concurrent processes quantise once
(file lock), and a finished directory appears atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engines.engine_cache import cache_root, file_lock, safe_name
from engines.errors import ModelError
from engines.split import SplitMaskRCNN

__all__ = ["KEY_FORMAT", "openvino_cache_dir", "prepared_inputs", "quantized_models"]

log = logging.getLogger(__name__)

KEY_FORMAT = "segstream-openvino-int8"
#: Bump when the quantisation recipe changes (invalidates cached models).
RECIPE_VERSION = 1
#: RoIs per frame kept for calibrating the heads (evenly spaced over the frame's RoIs).
_BOX_ROIS_PER_FRAME = 256
_MASK_ROIS_PER_FRAME = 64


def openvino_cache_dir(model_name: str, weights_tag: str, root: Path | None = None) -> Path:
    """Default quantised-model directory: ``<root>/openvino/<model>-<tag>``."""
    return (root or cache_root()) / "openvino" / safe_name(f"{model_name}-{weights_tag}")


class _Recorder:
    """Wraps a runner and keeps (a subset of) the inputs it is called with."""

    def __init__(self, runner: Callable[[Tensor], Any], rows: int | None) -> None:
        self.runner, self.rows = runner, rows
        self.samples: list[np.ndarray] = []

    def __call__(self, x: Tensor) -> Any:
        kept = x
        if self.rows is not None and x.shape[0] > self.rows:
            kept = x[torch.linspace(0, x.shape[0] - 1, self.rows).round().long()]
        if kept.shape[0]:
            self.samples.append(kept.detach().cpu().numpy().copy())
        return self.runner(x)


# Long on purpose: one NNCF calibration recipe step by step (dataset, ignored scopes, per-graph quantisation, save).
def quantized_models(
    backend: Any,
    net: nn.Module,
    models: dict[str, Any],
    compile_fp32: Callable[[Any, str], Callable[[Tensor], Any]],
    *,
    calibration: Iterable[np.ndarray] | None,
    calibration_source: str | None,
    calibration_frames: int,
    cache_dir: str | os.PathLike[str] | None,
    rebuild: bool,
    say: Callable[[str], None] | None,
) -> tuple[dict[str, Any], Path]:
    """The INT8 ``ov.Model`` of every graph in ``models`` (cached, or quantised now).

    ``backend``: the ``ExportedGraphBackend`` being built (its ``spec``, ``manifest``,
    ``options``, ``weights``); ``net``: the model whose glue runs the FP32 graphs
    (``compile_fp32(model, key)``) to record the heads' calibration inputs.
    Returns ``(models, directory)``.
    """
    import nncf
    import openvino as ov

    say = say or (lambda _msg: None)
    limit = int(calibration_frames)
    if limit < 1:
        raise ModelError(f"calibration_frames must be >= 1, got {calibration_frames}")
    spec = backend.spec
    prepared = None
    if calibration_source is None:  # identify the frames by their bytes
        if calibration is None:
            raise ModelError(_NEEDS_FRAMES)
        prepared = prepared_inputs(calibration, spec, limit)
        digest = hashlib.sha256()
        for batch, _sizes in prepared:
            digest.update(str(tuple(batch.shape)).encode())
            digest.update(batch.numpy().tobytes())
        calibration_id = f"sha256:{digest.hexdigest()}"
    else:
        calibration_id = str(calibration_source)
    key = {
        "format": KEY_FORMAT,
        "recipe": RECIPE_VERSION,
        "model": backend.manifest["model"],
        "graphs": {
            k: str(info["sha256"]) for k, info in sorted(backend.manifest["graphs"].items())
        },
        "openvino": str(ov.__version__),
        "nncf": str(nncf.__version__),
        "precision": "int8",
        "calibration": calibration_id,
        "calibration_frames": limit,
        "input": [spec.min_size, spec.max_size, spec.size_divisible],
        "detection": dict(sorted(backend.options.items())),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    root = (
        Path(cache_dir).expanduser()
        if cache_dir is not None
        else openvino_cache_dir(spec.name, backend.weights.tag)
    )
    directory = root / f"int8-{digest[:16]}"
    core = ov.Core()
    with file_lock(root / f".int8-{digest[:16]}.lock"):
        if not rebuild and _key_matches(directory, key):
            say(f"openvino: int8 models from cache {directory}")
            return {k: core.read_model(str(directory / f"{k}.xml")) for k in models}, directory
        if prepared is None:
            if calibration is None:
                raise ModelError(_NEEDS_FRAMES)
            prepared = prepared_inputs(calibration, spec, limit)
        if not prepared:
            raise ModelError(f"calibration ({calibration_source or 'frames'}) gave no frames")
        started = time.perf_counter()
        say(f"openvino: quantising {', '.join(models)} to int8 on {len(prepared)} frames ...")
        samples = _calibration_samples(net, models, compile_fp32, prepared, backend.manifest)
        quantized = {}
        for graph, data in samples.items():
            if not data:
                raise ModelError(f"calibration produced no inputs for {graph} (no detections?)")
            with _quiet():
                quantized[graph] = nncf.quantize(
                    models[graph], nncf.Dataset(data), subset_size=len(data)
                )
        _store(directory, quantized, key)
        say(f"openvino: int8 done in {time.perf_counter() - started:.1f} s -> {directory}")
        return quantized, directory


def prepared_inputs(
    frames: Iterable[np.ndarray], spec: Any, limit: int
) -> Sequence[tuple[Tensor, list[tuple[int, int]]]]:
    """Up to ``limit`` frames as single-image padded batches ``([1, 3, H, W], sizes)``."""
    from engines.transform import batch_images, prepare_image

    out = []
    for frame in frames:
        if len(out) >= limit:
            break
        image = np.asarray(frame)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ModelError(
                f"calibration frames must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}"
            )
        out.append(batch_images([prepare_image(image, spec, "cpu")], spec.size_divisible))
    return out


_NEEDS_FRAMES = (
    "openvino int8 needs calibration frames: pass calibration=<H x W x 3 uint8 frames>, e.g. "
    "from pipeline.sources.open_source(openvino_backend.DEFAULT_CALIBRATION_SOURCE)"
)


def _calibration_samples(
    net: nn.Module,
    models: dict[str, Any],
    compile_fp32: Callable[[Any, str], Callable[[Tensor], Any]],
    prepared: Any,
    manifest: dict[str, Any],
) -> dict[str, list[np.ndarray]]:
    """Per graph, the inputs to calibrate it with (see the module docs)."""
    images = [batch.numpy() for batch, _sizes in prepared]
    if "semantic" in models:
        return {"semantic": images}
    box = _Recorder(compile_fp32(models["box_head"], "box_head"), _BOX_ROIS_PER_FRAME)
    mask = _Recorder(compile_fp32(models["mask_head"], "mask_head"), _MASK_ROIS_PER_FRAME)
    split = SplitMaskRCNN(
        net, dense=compile_fp32(models["dense"], "dense"), box=box, mask=mask,
        feature_names=manifest.get("feature_names") or None,
    )  # fmt: skip
    for batch, sizes in prepared:
        split(batch, sizes)
    return {"dense": images, "box_head": box.samples, "mask_head": mask.samples}


def _key_matches(directory: Path, key: dict[str, Any]) -> bool:
    try:
        stored = json.loads((directory / "key.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stored != key:
        log.warning("openvino int8 cache %s was made for another configuration", directory)
        return False
    return all((directory / f"{k}.xml").is_file() for k in key["graphs"])


def _store(directory: Path, models: dict[str, Any], key: dict[str, Any]) -> None:
    """Write the IR files and ``key.json`` (last) into a temporary dir, then move it in place."""
    import openvino as ov

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        for graph, model in models.items():
            # compress_to_fp16 defaults to True: it would round the layers left in fp32
            ov.save_model(model, str(tmp / f"{graph}.xml"), compress_to_fp16=False)
        (tmp / "key.json").write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except OSError as exc:
        raise ModelError(f"cannot write the int8 models to {directory}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet() -> Any:
    """NNCF prints progress bars and INFO lines; a pipeline stage wants neither."""
    from nncf.common.logging.logger import set_log_level

    set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
