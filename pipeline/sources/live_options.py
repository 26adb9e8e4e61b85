"""The signature of a live source's constructor: its own options, then the shared ones.

:class:`~pipeline.sources.stream.StreamSource` and :class:`~pipeline.sources.camera.
CameraSource` declare only their own options and pass the rest (``**live``) on to
:class:`~pipeline.sources.live_av.LiveAVSource`; :func:`live_options` gives their
``__init__`` the full signature, which :func:`~pipeline.sources.open_source` reads to
check and fold a URI's options.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pipeline.sources.live_av import LiveAVSource

__all__ = ["live_options"]

_Init = TypeVar("_Init", bound=Callable[..., None])


def live_options(*, fixed: Iterable[str] = ()) -> Callable[[_Init], _Init]:
    """Decorates a subclass's ``__init__(self, uri, *, <its own options>, **live)`` that hands
    ``live`` on to :class:`LiveAVSource`: its signature becomes its own options followed by
    :class:`LiveAVSource`'s (in their order; an option the subclass declares itself, e.g.
    with another default, replaces the shared one in place), less ``fixed``, the ones the
    subclass sets itself. :func:`~pipeline.sources.open_source` reads that signature to check
    and fold the options, so every option the source takes stays visible there; a call with
    an argument it does not name raises ``TypeError`` before the subclass's code runs."""
    fixed = frozenset(fixed)

    def decorate(init: _Init) -> _Init:
        signature = inspect.signature(init)
        own = {name: p for name, p in signature.parameters.items() if p.kind is not p.VAR_KEYWORD}
        shared = [
            own.pop(name, p)
            for name, p in inspect.signature(LiveAVSource.__init__).parameters.items()
            if p.kind is p.KEYWORD_ONLY and name not in fixed
        ]
        full = signature.replace(parameters=[*own.values(), *shared])

        @functools.wraps(init)
        def checked(*args: Any, **kwargs: Any) -> None:
            full.bind(*args, **kwargs)
            init(*args, **kwargs)

        checked.__signature__ = full  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate
