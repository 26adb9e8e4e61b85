"""The resource plan: how many threads (and optionally which cores) each stage may use.

Five stage processes share the machine. Left alone, every one of them starts torch's
default pool (one thread per core) with OpenMP's *spinning* wait, so on a small machine
they burn cores waiting for each other: measured here, five processes on two cores lost
about 40 % of the throughput to spinning alone. The plan is made once, by the supervisor,
from the cores this process may really use (its affinity mask and its cgroup CPU quota):

- the model stage (``infer``) gets most of them: its work is large, parallel kernels;
- the light stages get one thread each: their work is small and mostly serial, and more
  threads would only add wake-ups;
- every stage waits passively (``OMP_WAIT_POLICY=PASSIVE``): a thread with nothing to do
  sleeps instead of spinning on a core another stage needs;
- the encoder (publish) gets a few codec threads when cores are to spare.

``resources:`` in the config overrides any of it; the run report shows what each stage got.
The budget is applied in two places: as environment variables when the stage process is
started (OpenMP reads them once, at load), and by :func:`apply_budget` inside the process
(torch, OpenCV). The in-process reference path applies the model stage's budget too, so
its numbers match the pipeline's bit for bit (some CPU kernels split work by thread).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("segstream")

MODEL_STAGE = "infer"
LIGHT_STAGES = ("capture", "preprocess", "postprocess", "publish")
# Variables every thread pool we may load reads at start-up (OpenMP, MKL, OpenBLAS,
# numexpr-style pools); set per stage before its interpreter starts.
_POOL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class StageBudget:
    """What one stage process may use."""

    threads: int  # torch intra-op / OpenMP / OpenCV / ONNX Runtime / OpenVINO threads
    codec_threads: int = 1  # video encoder threads (publish) or decoder threads (capture)
    cpus: tuple[int, ...] | None = None  # pinned to these cores (None: not pinned)
    nice: int = 0  # scheduling priority offset (higher: yields the core to the model stage)

    def environment(self) -> dict[str, str]:
        """Variables to start the stage's process with (read once, at library load)."""
        env = {name: str(self.threads) for name in _POOL_VARIABLES}
        # passive: idle OpenMP threads sleep at once instead of spinning for ~200 ms
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env["KMP_BLOCKTIME"] = "0"  # the same for Intel's OpenMP runtime, where torch uses it
        env["SEGSTREAM_THREADS"] = str(self.threads)
        env["SEGSTREAM_CODEC_THREADS"] = str(self.codec_threads)
        if self.cpus is not None:
            env["SEGSTREAM_CPUS"] = ",".join(map(str, self.cpus))
        return env


@dataclass(frozen=True)
class ResourcePlan:
    """One budget per stage, and the cores the plan was made for."""

    cores: int
    stages: dict[str, StageBudget]

    def budget(self, stage: str) -> StageBudget:
        return self.stages[stage]

    def to_dict(self) -> dict:
        return {"cores": self.cores, "stages": {name: asdict(b) for name, b in self.stages.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> ResourcePlan:
        stages = {}
        for name, budget in data["stages"].items():
            cpus = budget.get("cpus")
            stages[name] = StageBudget(int(budget["threads"]), int(budget.get("codec_threads", 1)),
                                       None if cpus is None else tuple(cpus), int(budget.get("nice", 0)))
        return cls(int(data["cores"]), stages)


def _cgroup_quota_cores(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Cores allowed by the cgroup CPU quota (v2 ``cpu.max``, or v1 cfs files); None: no limit."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by the cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, max(1, int(quota + 0.5)))
    return max(1, cores)


def plan_resources(
    cores: int,
    model_threads: int | None = None,
    light_threads: int = 1,
    codec_threads: int | None = None,
    pin_cpus: bool = False,
    allowed_cpus: tuple[int, ...] | None = None,
    light_nice: int = 10,
    live: bool = False,
) -> ResourcePlan:
    """The budget of every stage on a machine with ``cores`` usable cores.

    ``model_threads`` None: every core goes to the model. The light stages run between
    the model's batches and mostly while it waits on them, and with passive waits a core
    they take is handed back the moment they finish, so reserving a core for them would
    only leave it idle while the model runs (measured on 2 cores: all cores to the model
    was faster than ``cores - 1``). ``codec_threads`` None: the encoder gets a quarter of
    the cores (at least one), enough to keep x264's lookahead fed without competing with
    the model. ``pin_cpus``: the model stage is pinned to all of ``allowed_cpus`` but the
    last, the light stages share the last one (only on 3 cores or more; fewer cores are
    better shared than split). ``light_nice``: the light stages' priority offset, so the
    scheduler hands a contested core to the model's threads first (an OpenMP region waits
    for its slowest thread: a light stage preempting one of them stalls the whole model).
    Measured on 2 cores, default scene: nice 0 9.9 fps, 5 10.7, 10 11.0, 19 10.6. A live
    capture keeps priority 0: it must keep up with the feed whatever the model does.
    """
    cores = max(1, int(cores))
    model = max(1, min(cores, model_threads or cores))
    codec = max(1, codec_threads or cores // 4)
    budgets = {MODEL_STAGE: StageBudget(threads=model)}
    for stage in LIGHT_STAGES:
        nice = 0 if (stage == "capture" and live) else max(0, light_nice)
        budgets[stage] = StageBudget(threads=max(1, light_threads), codec_threads=codec if stage == "publish" else 1,
                                     nice=nice)
    if pin_cpus:
        cpus = allowed_cpus or tuple(sorted(os.sched_getaffinity(0)))
        if len(cpus) >= 3:
            heavy, light = cpus[:-1], cpus[-1:]
            budgets = {name: StageBudget(b.threads if name != MODEL_STAGE else min(b.threads, len(heavy)),
                                         b.codec_threads, heavy if name == MODEL_STAGE else light, b.nice)
                       for name, b in budgets.items()}
        else:
            log.info("resources: pin_cpus ignored on %d core(s): stages share them better unpinned", len(cpus))
    return ResourcePlan(cores, budgets)


def apply_budget(budget: StageBudget) -> None:
    """Inside a stage process: hold torch, OpenCV and the affinity to ``budget``.

    The OpenMP wait policy and pool sizes came with the environment at start-up;
    torch's own pools are set here too, since torch sizes them at import.
    """
    if budget.nice:
        try:
            current = os.nice(0)
            if current < budget.nice:  # idempotent: applied once per process
                os.nice(budget.nice - current)
        except OSError as exc:
            log.warning("resources: could not lower the priority by %d: %s", budget.nice, exc)
    if budget.cpus is not None:
        try:
            os.sched_setaffinity(0, budget.cpus)
        except (AttributeError, OSError) as exc:
            log.warning("resources: could not pin to cores %s: %s", budget.cpus, exc)
    import torch

    torch.set_num_threads(budget.threads)
    try:
        torch.set_num_interop_threads(1)  # only possible before torch's first parallel work
    except RuntimeError:
        pass
    cv2 = sys.modules.get("cv2")  # never import OpenCV where it is not used (FFmpeg clash)
    if cv2 is not None:
        cv2.setNumThreads(budget.threads)
