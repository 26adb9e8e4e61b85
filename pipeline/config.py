"""Typed, validated pipeline configuration: YAML in, one ``PipelineConfig`` out.

Every section forbids unknown keys, so a typo fails with a line that names the key.
Command-line flags override the file through ``apply_overrides``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.sources import Source
    from pipeline.sources.reconnect import ReconnectPolicy
    from pipeline.tracking.tracker import TrackerParams

HOPS = ("capture", "preprocess", "infer", "postprocess")  # the stage that PUSHes on each hop


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ReconnectConfig(_Section):
    """Live feeds (network streams, cameras): timeouts, and how a lost feed is retried."""

    open_timeout_s: float = Field(default=5.0, gt=0.0, le=600.0)  # connecting / opening the device
    read_timeout_s: float = Field(default=5.0, gt=0.0, le=600.0)  # no data this long: offline
    max_attempts: int | None = Field(default=None, ge=1)  # reconnect attempts per outage; None: forever
    backoff_initial_s: float = Field(default=0.5, gt=0.0, le=600.0)  # first wait; grows exponentially
    backoff_max_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    backoff_jitter: float = Field(default=0.2, ge=0.0, le=1.0)  # +- this fraction, so feeds do not retry in step

    @model_validator(mode="after")
    def _check_backoff(self) -> ReconnectConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s ({self.backoff_initial_s})")
        return self

    def policy(self) -> ReconnectPolicy:
        """These settings as the one object live sources take (``reconnect=``)."""
        from pipeline.sources.reconnect import ReconnectPolicy

        return ReconnectPolicy(**self.model_dump())


class SourceConfig(_Section):
    """Where frames come from."""

    # one URI, or a list of them: several streams in one pipeline (stream ids "0", "1", ...)
    uri: str | list[str] = "synthetic://?seed=7&size=640x480&fps=30&frames=90"
    max_frames: int | None = Field(default=None, ge=1)
    realtime: bool = False  # play a file at its own frame rate, as a live feed (live policy applies)
    # live feeds: "latest" frame wins, "drop_oldest" of a short queue, or "block" (no drops)
    live_policy: Literal["latest", "drop_oldest", "block"] = "latest"
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str | list[str]) -> str | list[str]:
        if isinstance(uri, list) and not uri:
            raise ValueError("needs at least one source")
        return uri

    @property
    def uris(self) -> list[str]:
        """The sources, one per stream; stream ids are their positions."""
        return [self.uri] if isinstance(self.uri, str) else list(self.uri)

    def open(self, uri: str, wait_for_online: bool = False) -> Source:
        """Open one of the sources with its configured options (timeouts and backoff for
        feeds that reconnect). ``wait_for_online``: a feed that is down now is not an error;
        it is retried like an outage (the capture stage; a run's start-up check fails fast)."""
        from pipeline.sources import open_source, reconnects

        if not reconnects(uri):
            return open_source(uri)
        return open_source(uri, reconnect=self.reconnect.policy(), wait_for_online=wait_for_online)


#: Which backends take each ``model.backend_options`` key but precision (``auto`` only
#: what every candidate takes: it passes the same options to each). It mirrors the
#: backends' constructors (this module imports no engines); tests/test_backend_options.py
#: checks that it does.
BACKEND_OPTION_TAKERS: dict[str, tuple[str, ...]] = {
    "threads": ("pytorch", "onnxruntime", "openvino", "tensorrt", "auto"),
    "calibration_source": ("openvino", "tensorrt"),
    "calibration_frames": ("openvino", "tensorrt"),
    "tensorrt_ep": ("onnxruntime",),
}
#: The precisions each backend runs. pytorch and onnxruntime run fp32 only (no option: fp32
#: there is accepted as what they do); auto none, since its candidates differ (TensorRT's
#: default is fp16).
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "pytorch": ("fp32",),
    "onnxruntime": ("fp32",),
    "openvino": ("fp32", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
    "auto": (),
}


class BackendOptionsConfig(_Section):
    """``model.backend_options``: how the chosen backend runs the model. Every key left out
    (or null) keeps the backend's default. A key the configured backend does not take is an
    error naming it (see ``check``), never silently ignored."""

    # fp32 (every backend), fp16 (tensorrt), int8 (openvino, tensorrt: calibrated on frames)
    precision: Literal["fp32", "fp16", "int8"] | None = None
    threads: int | None = Field(default=None, ge=1, le=1024)  # overrides the model's thread budget
    # int8: the source URI of calibration frames (null: the reserved synthetic scene,
    # engines.backends.options.DEFAULT_CALIBRATION_SOURCE), at most calibration_frames (null: 64)
    calibration_source: str | None = None
    calibration_frames: int | None = Field(default=None, ge=1, le=100_000)
    # onnxruntime on cuda: may ORT use its TensorRT execution provider (default: yes)
    tensorrt_ep: bool | None = None

    def given(self) -> dict[str, Any]:
        """The keys that are set (not null)."""
        return self.model_dump(exclude_none=True)

    def check(self, backend: str) -> str | None:
        """What is wrong with these options for ``backend`` (one line), or None."""
        given = self.given()
        precision = given.pop("precision", None)
        if precision is not None and precision not in BACKEND_PRECISIONS[backend]:
            if backend == "auto":
                return ("precision needs a fixed model.backend, not auto (its candidates run "
                        "different precisions)")
            runs = [name for name, choices in BACKEND_PRECISIONS.items() if precision in choices]
            return f"precision {precision} runs on backend {' or '.join(runs)}, not {backend}"
        for key in given:
            takers = BACKEND_OPTION_TAKERS[key]
            if backend not in takers:
                return f"{key} is an option of backend {' or '.join(takers)}, not {backend}"
            if key.startswith("calibration_") and precision != "int8":
                shown = precision or "the default"
                return f"{key} is used by precision int8 only (precision is {shown})"
        return None


class ModelConfig(_Section):
    """Which model runs and how its detections are filtered."""

    name: str = "maskrcnn_demo"
    weights: str = "demo"  # torchvision weight name, checkpoint path, "random" or "demo"
    # auto: the fastest installed backend for this model, size, batch and machine, measured
    # once and remembered (engines/backends/autoselect.py)
    backend: Literal["pytorch", "onnxruntime", "openvino", "tensorrt", "auto"] = "auto"
    device: Literal["cpu", "cuda"] = "cpu"
    min_size: int | None = Field(default=None, ge=32)  # None: the model's own default
    max_size: int | None = Field(default=None, ge=32)
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    nms_iou: float = Field(default=0.5, gt=0.0, le=1.0)  # class-aware NMS; 1.0 disables
    mask_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    max_detections: int = Field(default=100, ge=1)
    seed: int = 0  # for `random` weights
    # panoptic mode: a semantic model run on the same batches as the instance model `name`,
    # the two fused into one segment map per frame (pipeline/panoptic.py); also written
    # `name: maskrcnn_demo+fcn8s_demo`. It runs on the same backend, device and threads.
    semantic: str | None = None
    semantic_weights: str = "demo"  # as `weights`, for the semantic model
    # fusion: an instance more than this fraction covered by better ones is dropped
    panoptic_overlap: float = Field(default=0.5, ge=0.0, le=1.0)
    # fusion: fewer stuff pixels than this form no segment (None: 4096 px at 640x480, scaled
    # to the frame's area)
    stuff_min_area: int | None = Field(default=None, ge=0)
    # the backend's own options (precision, threads, int8 calibration, ...): see
    # BackendOptionsConfig; checked against `backend` here, so a run never starts with one
    # the backend would not take
    backend_options: BackendOptionsConfig = Field(default_factory=BackendOptionsConfig)

    @model_validator(mode="before")
    @classmethod
    def _split_panoptic_name(cls, data: Any) -> Any:
        """``name: a+b`` is ``name: a, semantic: b`` (the command line's ``--model a+b``)."""
        if isinstance(data, dict) and isinstance(data.get("name"), str) and "+" in data["name"]:
            first, _, second = data["name"].partition("+")
            if not first or not second or "+" in second:
                raise ValueError(f"name: expected INSTANCE_MODEL+SEMANTIC_MODEL, got {data['name']!r}")
            if data.get("semantic") not in (None, second):
                raise ValueError(f"name {data['name']!r} and semantic {data['semantic']!r} disagree")
            data = {**data, "name": first, "semantic": second}
        return data

    @field_validator("backend_options", mode="before")
    @classmethod
    def _no_backend_options(cls, value: Any) -> Any:
        return {} if value is None else value  # `backend_options:` with nothing under it

    @field_validator("backend_options")
    @classmethod
    def _check_backend_options(
        cls, options: BackendOptionsConfig, info: ValidationInfo
    ) -> BackendOptionsConfig:
        backend = info.data.get("backend")  # absent when it failed (its own error says why)
        problem = options.check(backend) if backend is not None else None
        if problem:
            raise ValueError(problem)
        return options


class BatchingConfig(_Section):
    """How the infer stage groups frames into one launch."""

    batch_size: int = Field(default=4, ge=1, le=256)
    max_wait_ms: float = Field(default=10.0, ge=0.0, le=10_000.0)


class TransportConfig(_Section):
    """Sockets between stages and the shared-memory frame ring."""

    # Per hop endpoint, keyed by the sending stage; "ipc" picks a private ipc:// path.
    hops: dict[str, str] = Field(default_factory=dict)
    queue_depth: int = Field(default=2, ge=1, le=64)  # ZeroMQ high-water mark per hop
    ring_slots: int | None = Field(default=None, ge=2, le=1024)  # None: derived from batch/queues
    heartbeat_s: float = Field(default=1.0, gt=0.0)
    stage_timeout_s: float = Field(default=60.0, gt=0.0)  # a stage silent this long is hung

    @field_validator("hops")
    @classmethod
    def _check_hops(cls, hops: dict[str, str]) -> dict[str, str]:
        for stage, endpoint in hops.items():
            if stage not in HOPS:
                raise ValueError(f"unknown hop '{stage}' (hops are named by sender: {', '.join(HOPS)})")
            if endpoint != "ipc" and not endpoint.startswith(("ipc://", "tcp://")):
                raise ValueError(f"hop '{stage}': endpoint '{endpoint}' must be ipc://... or tcp://...")
        return hops


class SupervisionConfig(_Section):
    """What the supervisor does when a stage dies or hangs."""

    # per stage within restart_window_s (a live feed runs for weeks: old restarts are
    # forgiven); 0: a failure ends the run
    max_restarts: int = Field(default=3, ge=0, le=1000)
    restart_window_s: float = Field(default=600.0, gt=0.0, le=7 * 86400.0)
    restart_backoff_s: float = Field(default=0.5, ge=0.0, le=60.0)  # first wait; doubles per recent restart
    restart_backoff_max_s: float = Field(default=10.0, ge=0.0, le=600.0)
    # The overlay video is encoded in closed segments of this many frames (each starts with a key
    # frame; rounded up to whole batches): a restarted publish re-encodes only the one it was writing.
    video_segment_frames: int = Field(default=32, ge=1, le=1024)


class OutputConfig(_Section):
    """What the run produces."""

    video: str | None = "out/overlay.mp4"  # overlay video; null disables drawing and encoding
    codec: str | None = None  # None: chosen by the container (mp4 -> libx264, webm -> vp9, avi -> mjpeg)
    # encoder options over the codec's defaults, e.g. {preset: veryfast, crf: 18} for smaller
    # files at more CPU per frame (libx264's default here is preset ultrafast, crf 20)
    encoder_options: dict[str, str | int | float] = Field(default_factory=dict)
    publish: str | None = "tcp://127.0.0.1:5560"  # ZeroMQ PUB endpoint for results; null disables
    allow_remote: bool = False  # binding a non-loopback address needs this
    curve_secret_key: str | None = None  # CURVE: the publisher's secret key file (encrypts tcp publish)
    curve_authorized_dir: str | None = None  # CURVE: only clients whose public keys are here get results
    save_results: str | None = None  # JSON lines, one per frame
    report: str | None = None  # JSON run report
    mcap: str | None = None  # ROS 2 messages per frame in an MCAP file (pipeline/sinks/mcap_recorder.py)
    overlay_alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    progress: bool = True  # progress bar on a TTY

    @field_validator("publish")
    @classmethod
    def _check_publish(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and not endpoint.startswith(("ipc://", "tcp://")):
            raise ValueError(f"publish endpoint '{endpoint}' must be ipc://... or tcp://...")
        return endpoint


class ResourcesConfig(_Section):
    """Threads (and cores) per stage; every value left out is planned from the cores this
    process may use (see ``pipeline/resources.py``). ``resources: auto`` is all defaults."""

    model_threads: int | None = Field(default=None, ge=1, le=1024)  # infer; None: every usable core
    light_threads: int = Field(default=1, ge=1, le=64)  # capture, preprocess, postprocess, publish
    codec_threads: int | None = Field(default=None, ge=1, le=64)  # video encoder; None: cores / 4
    pin_cpus: bool = False  # pin the model stage and the light stages to separate cores (3+ cores)
    light_nice: int = Field(default=10, ge=0, le=19)  # light stages yield contested cores to the model

    def plan_options(self) -> dict[str, Any]:
        return {"model_threads": self.model_threads, "light_threads": self.light_threads,
                "codec_threads": self.codec_threads, "pin_cpus": self.pin_cpus, "light_nice": self.light_nice}


class TrackingConfig(_Section):
    """Per-stream multi-object tracking of instance models (``pipeline/tracking/``).
    Semantic models have no instances, so nothing is tracked for them."""

    enabled: bool = True
    high_score: float = Field(default=0.6, ge=0.0, le=1.0)  # detections this confident start tracks
    match_similarity: float = Field(default=0.2, gt=0.0, le=1.0)  # min similarity to match (stages 1, 3)
    low_match_similarity: float = Field(default=0.4, gt=0.0, le=1.0)  # ... for low-score detections
    mask_weight: float = Field(default=0.5, ge=0.0, le=1.0)  # similarity = w * mask IoU + (1 - w) * box IoU
    min_hits: int = Field(default=2, ge=1, le=100)  # matches before a track is confirmed and gets an id
    max_lost_s: float = Field(default=2.0, ge=0.0, le=3600.0)  # frame-time seconds a lost track is kept
    duplicate_iou: float = Field(default=0.7, gt=0.0, le=1.0)  # mask IoU making the weaker detection a duplicate
    refind_reach: float = Field(default=2.0, ge=0.0, le=100.0)  # re-find reach, box diagonals per second lost

    def params(self) -> TrackerParams:
        from pipeline.tracking.tracker import TrackerParams

        return TrackerParams(self.high_score, self.match_similarity, self.low_match_similarity, self.mask_weight,
                             self.min_hits, self.max_lost_s, self.duplicate_iou, self.refind_reach)


class ObservabilityConfig(_Section):
    """Watching a run from outside (README "Watching a run"); each HOST:PORT is loopback
    unless ``output.allow_remote``."""

    # Prometheus metrics over HTTP at HOST:PORT (port 0: any free)
    metrics: str | None = None
    # live preview in a browser at http://HOST:PORT/ (MJPEG overlay + stats), served by publish
    preview: str | None = None
    foxglove: str | None = None  # the --mcap messages live over Foxglove's WebSocket at ws://HOST:PORT


class PipelineConfig(_Section):
    """The whole run."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    transport: TransportConfig = Field(default_factory=TransportConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)

    @field_validator("resources", mode="before")
    @classmethod
    def _resources_auto(cls, value: Any) -> Any:
        return {} if value in ("auto", None) else value

    def segment_frames(self) -> int:
        """Frames per closed overlay segment: ``video_segment_frames`` rounded up to whole
        batches, so that publish commits (and a restart replays) whole batches only."""
        batch = self.batching.batch_size
        return -(-self.supervision.video_segment_frames // batch) * batch


def _format_validation_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        return f"{origin}: unknown key '{key}'"
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{origin}: {key}: {first['msg']}{shown}"


def config_from_dict(data: dict[str, Any], origin: str = "config") -> PipelineConfig:
    """Validate a plain dict; raise ``ConfigError`` naming the first bad key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: top level must be a mapping, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read a YAML config file (None: built-in defaults, which equal configs/default.yaml)."""
    if path is None:
        return PipelineConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', err)}") from None
    return config_from_dict(data, origin=str(path))


def apply_overrides(config: PipelineConfig, overrides: dict[str, Any]) -> PipelineConfig:
    """Return a new config with dotted-key overrides applied (``{"model.name": "fcn_demo"}``);
    a ``None`` value applies too (``--output none`` disables the overlay video)."""
    data = config.model_dump()
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        data[section][key] = value
    return config_from_dict(data, origin="command line")
