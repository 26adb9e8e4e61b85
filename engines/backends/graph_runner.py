"""What every backend that runs the exported ONNX graphs shares; only the runner differs.

A *runner* executes one graph of the split (``engines.split``): a callable
``runner(x: Tensor) -> list[Tensor]`` (ONNX Runtime's ``OrtGraph``, OpenVINO's ``OvGraph``,
TensorRT's ``TrtGraph``).
``ExportedGraphBackend`` does the rest, identically for all of them:

* :meth:`ExportedGraphBackend._load_export`: the cached (or given) ONNX export and its
  manifest (:func:`resolve_export`), the ``ModelSpec``, the Mask R-CNN detection settings;
* :meth:`ExportedGraphBackend._assemble`: one runner per graph (made by the backend's
  factory), wired into ``SplitMaskRCNN`` (with the eager glue: anchors, NMS, RoIAlign,
  postprocess) or ``SplitSemantic``;
* ``infer`` (input checks, then the split) and ``close`` (from ``base.SplitBackend``).

The TensorRT backend is one too: it builds its engines from the same exports.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from engines.backends.base import ModelSpec, SplitBackend
from engines.backends.options import ModelOptions
from engines.backends.torch_backend import build_spec
from engines.errors import ModelError
from engines.export import ensure_export, load_manifest
from engines.registry import get_model_entry
from engines.split import SplitMaskRCNN, SplitSemantic
from engines.weights import DEFAULT_SEED, LoadedWeights, build_model, resolve_weights

__all__ = ["ExportedGraphBackend", "GraphRunner", "resolve_export"]

#: One graph of the split as a callable on torch tensors.
GraphRunner = Callable[[Tensor], Sequence[Tensor]]


class ExportedGraphBackend(SplitBackend):
    """Base of the backends that run the ONNX export's graphs with some runtime.

    Subclasses call :meth:`_load_export` and then :meth:`_assemble` from ``__init__``; they
    provide only the runner factory (and their runtime's options).
    """

    weights: LoadedWeights
    export_dir: Path
    manifest: dict[str, Any]
    #: The shared options the backend was opened with.
    model_options: ModelOptions
    #: Detection settings in effect (Mask R-CNN; empty for semantic models).
    options: dict[str, Any]
    #: The runners by graph key (``dense`` / ``box_head`` / ``mask_head`` or ``semantic``).
    graphs: dict[str, GraphRunner]

    def _load_export(
        self,
        model: str,
        weights: str | LoadedWeights | None,
        options: ModelOptions,
        *,
        onnx_dir: str | os.PathLike[str] | None,
        opset: int,
        argmax: bool,
    ) -> nn.Module:
        """Resolve the export and set ``weights``, ``spec``, ``export_dir``, ``manifest``,
        ``model_options`` and ``options``. Returns the model (only its glue is used later)."""
        entry = get_model_entry(model)
        net, loaded, export_dir, manifest = resolve_export(
            entry.name, weights, options.num_classes, options.seed, onnx_dir, opset, argmax,
            options.progress,
        )  # fmt: skip
        min_size, max_size = options.min_size, options.max_size
        if onnx_dir is not None:  # the export's recorded input size, unless overridden
            min_size = min_size if min_size is not None else manifest["input"].get("min_size")
            max_size = max_size if max_size is not None else manifest["input"].get("max_size")
        # what was loaded, without its tensors (the graphs hold them)
        self.weights = dataclasses.replace(loaded, state_dict=None)
        self.spec: ModelSpec = build_spec(
            entry, self.weights, net, min_size=min_size, max_size=max_size
        )
        self.export_dir = export_dir
        self.manifest = manifest
        self.model_options = options
        self.options = {}
        if entry.task == "instance":
            self.options = options.detection.apply(net)
        return net

    def _assemble(self, net: nn.Module, runner: Callable[[str], GraphRunner]) -> None:
        """Make one runner per graph with ``runner(key)`` and wire them into the split."""
        if self.spec.task == "instance":
            self.graphs = {k: runner(k) for k in ("dense", "box_head", "mask_head")}
            split = SplitMaskRCNN(
                net.to(self.device).eval(),
                dense=self.graphs["dense"],
                box=self.graphs["box_head"],
                mask=self.graphs["mask_head"],
                feature_names=self.manifest.get("feature_names") or None,
            )
            split.drop_dense_weights()
            self._run = split
        else:
            self.graphs = {"semantic": runner("semantic")}
            self._run = SplitSemantic(self.graphs["semantic"], argmax=bool(self.manifest["argmax"]))

    def close(self) -> None:
        """Release the runners."""
        self.graphs = {}
        super().close()


# --------------------------------------------------------------------------- the export


def resolve_export(
    model_name: str,
    weights: str | LoadedWeights | None,
    num_classes: int | None,
    seed: int | None,
    onnx_dir: str | os.PathLike[str] | None,
    opset: int,
    argmax: bool,
    progress: bool,
) -> tuple[nn.Module, LoadedWeights, Path, dict[str, Any]]:
    """Model (for the glue), weights, export directory and manifest of a backend.

    ``onnx_dir``: an existing export (``weights``, if given, must be the weights it was made
    from); otherwise the cached export of ``weights`` (made now if missing or stale, see
    ``engines.export.ensure_export``).
    """
    say = print if progress else None
    explicit_weights = isinstance(weights, LoadedWeights) or (
        weights is not None and str(weights).strip().lower() != "default"
    )
    if onnx_dir is not None:
        directory = Path(onnx_dir).expanduser()
        manifest = load_manifest(directory, verify_files=False)
        if manifest["model"] != model_name:
            raise ModelError(f"{directory} is an export of {manifest['model']}, not {model_name}")
        if explicit_weights:
            loaded = _load(model_name, weights, num_classes, seed)
            net = build_model(loaded)
            return (*_checked(net, loaded, directory, manifest), directory, manifest)
        loaded = _weights_from_manifest(model_name, manifest)
        net = build_model(loaded)  # random init: only the glue (anchors, poolers) is used
        return net, loaded, directory, manifest
    loaded = _load(model_name, weights, num_classes, seed)
    net = build_model(loaded)
    directory, manifest = ensure_export(loaded, net, opset=opset, argmax=argmax, progress=say)
    return net, loaded, directory, manifest


def _load(
    model_name: str, weights: Any, num_classes: int | None, seed: int | None
) -> LoadedWeights:
    if isinstance(weights, LoadedWeights):
        if weights.model_name != model_name:
            raise ModelError(f"weights for {weights.model_name} given to model {model_name}")
        return weights
    return resolve_weights(model_name, weights, num_classes, seed=seed)


def _checked(
    net: nn.Module, loaded: LoadedWeights, directory: Path, manifest: dict[str, Any]
) -> tuple[nn.Module, LoadedWeights]:
    from engines.export import state_dict_sha256

    if (manifest.get("weights") or {}).get("sha256") != state_dict_sha256(net):
        raise ModelError(
            f"the ONNX export in {directory} was made from other weights than {loaded.source} "
            "(export again, or leave --weights at default to use the export's own)"
        )
    return net, loaded


def _weights_from_manifest(model_name: str, manifest: dict[str, Any]) -> LoadedWeights:
    """A weights description from an export manifest (no tensors: the graphs hold them)."""
    info = manifest.get("weights") or {}
    names = manifest.get("class_names")
    if not isinstance(names, list) or not names:
        raise ModelError("the export manifest lists no class names")
    return LoadedWeights(
        model_name=model_name,
        state_dict=None,
        class_names=tuple(str(n) for n in names),
        tag=str(info.get("tag", "onnx")),
        untrained=bool(info.get("untrained", False)),
        source=f"ONNX export ({info.get('source', 'unknown weights')})",
        seed=DEFAULT_SEED,
        meta=dict(info.get("meta") or {}),
    )
