"""Ctrl-C and SIGTERM while the program starts up.

The first second or so goes to imports (pydantic, PyAV, torch). A ``KeyboardInterrupt``
raised inside one of them can surface as a long traceback, or as another error entirely
(a half-imported extension module that cannot be loaded again). So, until the supervisor
installs its own handlers, both signals are only *recorded*; once the imports are done,
``resume`` says whether one came and makes later ones raise ``KeyboardInterrupt``.
Import nothing heavy here: this module is loaded before everything else.
"""

from __future__ import annotations

import signal
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []
_original: dict[int, Any] = {}


def _record(signum: int, _frame: Any) -> None:
    _received.append(signum)


def defer() -> None:
    """Record SIGINT/SIGTERM from now on instead of acting on them (main thread only)."""
    for sig in SIGNALS:
        previous = signal.signal(sig, _record)
        if previous is not _record:
            _original.setdefault(sig, previous)


def resume() -> bool:
    """Let SIGINT/SIGTERM raise ``KeyboardInterrupt`` again; True if one was recorded."""
    for sig in SIGNALS:
        signal.signal(sig, signal.default_int_handler)
    return bool(_received)


def restore() -> None:
    """Put back the handlers that were there before ``defer``."""
    for sig, handler in _original.items():
        signal.signal(sig, handler)
    _original.clear()
    _received.clear()
