"""Before anything starts: check the config against the machine, probe the sources, and
write the run plan (:class:`~pipeline.plan.RunPlan`) from the planner's decisions.

Everything that can be wrong with a run's input fails here, before a model loads: remote
endpoints without ``allow_remote``, missing key files, bad output paths, an unknown model,
a source that cannot be opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.registry import get_model_entry
from engines.weights import demo_weights_path
from pipeline.config import HOPS, PipelineConfig
from pipeline.errors import ConfigError
from pipeline.output_paths import check_output_paths
from pipeline.plan import STAGES, RunPlan, source_info_to_dict
from pipeline.planner import RunDecisions
from pipeline.preview import check_preview_port
from pipeline.sinks.foxglove_live import check_foxglove
from pipeline.sources.base import SourceInfo
from pipeline.supervision.metrics import metrics_address
from pipeline.transport import sockets


def check_before_start(config: PipelineConfig) -> None:
    """Refuse a config that cannot run here (raises :class:`ConfigError`)."""
    out = config.output
    endpoints = [out.publish] if out.publish else []
    endpoints += [e for e in config.transport.hops.values() if e != "ipc"]
    for endpoint in endpoints:
        if not sockets.is_loopback_endpoint(endpoint) and not out.allow_remote:
            raise ConfigError(
                f"endpoint '{endpoint}' is not a loopback address: set output.allow_remote "
                "(--allow-remote) to bind it"
            )
    if config.observability.metrics is not None:
        metrics_address(config.observability.metrics, out.allow_remote)  # HOST:PORT, loopback
    if config.observability.preview is not None:  # HOST:PORT, loopback, and free (publish binds it)
        check_preview_port(config.observability.preview, out.allow_remote)
    if config.observability.foxglove is not None:  # likewise, and foxglove-sdk installed
        check_foxglove(config.observability.foxglove, out.allow_remote)
    for key, path in (("output.curve_secret_key", out.curve_secret_key),
                      ("output.curve_authorized_dir", out.curve_authorized_dir)):
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{key}: '{path}' does not exist")
    check_output_paths(config)  # a bad path fails now, not once the model has loaded
    model = config.model
    if model.semantic is not None:  # panoptic mode: an instance model and a semantic one
        for key, name, task in (("model.name", model.name, "an instance"), ("model.semantic", model.semantic, "a semantic")):
            if not task.endswith(get_model_entry(name).task):
                raise ConfigError(f"{key}: panoptic mode needs {task} model here, and {name} is "
                                  f"{get_model_entry(name).task} (--model INSTANCE+SEMANTIC, e.g. maskrcnn_demo+fcn8s_demo)")
        _check_model("model.semantic", model.semantic, "model.semantic_weights", model.semantic_weights)
    _check_model("model.name", model.name, "model.weights", model.weights)


def _check_model(name_key: str, name: str, weights_key: str, weights: str) -> None:
    """An unknown model, or a demo model whose checkpoint was never trained: say so now, once."""
    get_model_entry(name)
    if weights == "demo" and not demo_weights_path(name).is_file():
        raise ConfigError(
            f"{weights_key}: no demo weights for {name} "
            f"({demo_weights_path(name)} does not exist; train them with "
            f"python -m pipeline.training --model {name}, or use --weights random or a checkpoint)"
        )


def probe_streams(config: PipelineConfig) -> list[SourceInfo]:
    """What each source says of itself, one per ``source.uris`` (``realtime``: live)."""
    infos = []
    for uri in config.source.uris:
        source = config.source.open(uri)
        try:
            info = source.info()
        finally:
            source.close()
        if config.source.realtime:
            info.live = True
        infos.append(info)
    return infos


def endpoints(config: PipelineConfig, run_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Every socket of the run, and the senders whose hop is tcp (pixels travel inline)."""
    found = {
        "events": f"ipc://{run_dir}/events.sock",
        "control": f"ipc://{run_dir}/control.sock",
        "release": f"ipc://{run_dir}/release.sock",
        "admissions": f"ipc://{run_dir}/admissions.sock",  # bound by capture for live feeds
    }
    inline = []
    for sender in HOPS:
        receiver = STAGES[STAGES.index(sender) + 1]
        endpoint = config.transport.hops.get(sender, "ipc")
        if endpoint == "ipc":
            endpoint = f"ipc://{run_dir}/{receiver}.sock"
        elif endpoint.startswith("tcp://"):
            inline.append(sender)
        found[f"{receiver}_in"] = endpoint
    return found, inline


def plan_decisions(decisions: RunDecisions) -> dict[str, Any]:
    """The decisions the stages read from the plan (``RunPlan.decisions``)."""
    return {"batching": decisions.batching, "batch_size": decisions.batch_size,
            "commit_every": decisions.commit_every, "segment_frames": decisions.segment_frames,
            "delivery": decisions.delivery, "admissions": decisions.admissions}


def build_plan(config: PipelineConfig, run_id: str, run_dir: Path, ring_name: str,
               infos: list[SourceInfo], combined_info: SourceInfo, decisions: RunDecisions) -> RunPlan:
    """The plan every stage reads (the model spec is filled in once infer has loaded it)."""
    found, inline = endpoints(config, run_dir)
    return RunPlan(
        run_id=run_id,
        run_dir=str(run_dir),
        config=config.model_dump(),
        endpoints=found,
        inline_hops=inline,
        ring_name=ring_name,
        ring_slots=decisions.ring_slots,
        spec={},
        source=source_info_to_dict(combined_info),
        streams=[
            {"id": str(i), "uri": uri, "info": source_info_to_dict(info)}
            for i, (uri, info) in enumerate(zip(config.source.uris, infos, strict=True))
        ],
        resources=decisions.resources.to_dict(),
        decisions=plan_decisions(decisions),
    )
