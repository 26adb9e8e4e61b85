"""Entry point of a stage process: ``python -m pipeline.stages NAME PLAN.json``.

The process names itself (``ps`` shows ``segstream: infer``), dies with its supervisor
(PR_SET_PDEATHSIG), leaves Ctrl-C to the supervisor (which drains), and on failure writes
one line to ``<run_dir>/<stage>.error`` for the supervisor to report.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.plan import RunPlan
from pipeline.stage_messages import EventKind
from pipeline.stages.base import StopRequested

STAGE_CLASSES = {
    "capture": "pipeline.stages.capture:CaptureStage",
    "preprocess": "pipeline.stages.preprocess:PreprocessStage",
    "infer": "pipeline.stages.infer:InferStage",
    "postprocess": "pipeline.stages.postprocess:PostprocessStage",
    "publish": "pipeline.stages.publish:PublishStage",
}
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the supervisor dies, so no stage is ever orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _name_process(stage: str, run_id: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(f"segstream: {stage} [{run_id}]")
    except ImportError:
        pass


def main(argv: list[str]) -> int:
    name, plan_path, parent_pid = argv[0], argv[1], int(argv[2])
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plan = RunPlan.load(plan_path)
    _name_process(name, plan.run_id)
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    module_name, class_name = STAGE_CLASSES[name].split(":")
    stage = None
    try:
        stage_class = getattr(importlib.import_module(module_name), class_name)
        stage = stage_class(plan)
        stage.run()
        return 0
    except StopRequested:
        return 0
    except Exception as err:  # report any failure as one line; full trace to stderr
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not isinstance(err, PipelineError):  # ours (incl. engines' ModelError): one line
            message = f"{type(err).__name__}: {message}"
            traceback.print_exc(file=sys.stderr)
        Path(plan.run_dir, f"{name}.error").write_text(message)
        if stage is not None:
            try:
                stage.emit(EventKind.ERROR, message=message)
            except Exception:  # noqa: BLE001 - best effort; the .error file is authoritative
                pass
        return 1
    finally:
        if stage is not None:
            stage.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
