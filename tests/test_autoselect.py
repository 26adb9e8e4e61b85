"""``backend: auto``: every available backend is timed once per key, the fastest runs, and
the decision is remembered; the pieces with stand-in backends (fast), then the real path."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from engines.backends import AutoProbe, autoselect, available_backends, create_backend
from engines.backends.autoselect import SelectionKey, select_backend
from engines.engine_cache import CACHE_ENV


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path


class _Stub:
    """Stands in for an opened backend: a name and a fixed cost."""

    def __init__(self, name: str, ms: float) -> None:
        self.name, self.ms, self.closed = name, ms, False

    def close(self) -> None:
        self.closed = True


def _key(batch: int = 2) -> SelectionKey:
    return SelectionKey.make("maskrcnn_demo", "random", "cpu", batch, (48, 64), 2, {"min_size": 96})


@pytest.fixture
def stub_timing(monkeypatch):
    calls: list[str] = []

    def fake_time(backend, prepare, images, batch_size):
        calls.append(backend.name)
        return backend.ms

    monkeypatch.setattr(autoselect, "time_backend", fake_time)
    return calls


def test_fastest_wins_others_are_closed_and_the_decision_is_remembered(cache, stub_timing):
    opened: dict[str, _Stub] = {}
    costs = {"pytorch": 30.0, "onnxruntime": 12.0, "openvino": 20.0}

    def open_candidate(name):
        opened[name] = _Stub(name, costs[name])
        return opened[name]

    images = [np.zeros((48, 64, 3), np.uint8)] * 4
    selection, backend = select_backend(_key(), list(costs), open_candidate, images)
    assert selection.backend == "onnxruntime" and backend is opened["onnxruntime"] and not backend.closed
    assert opened["pytorch"].closed and opened["openvino"].closed
    assert selection.ms_per_frame == costs and not selection.cached
    assert "onnxruntime 12.0, openvino 20.0, pytorch 30.0 (measured now)" in selection.reason()
    stored = json.loads((cache / "autoselect.json").read_text())
    assert [entry["backend"] for entry in stored.values()] == ["onnxruntime"]

    stub_timing.clear()
    again, none = select_backend(_key(), list(costs), open_candidate, images)
    assert again.cached and again.backend == "onnxruntime" and none is None
    assert stub_timing == []  # nothing timed again
    assert "cached measurement of" in again.reason()

    # another batch size is another question: measured anew
    select_backend(_key(batch=4), list(costs), open_candidate, images)
    assert sorted(stub_timing) == sorted(costs)


def test_a_candidate_that_cannot_run_is_skipped_with_its_reason(cache, stub_timing):
    def open_candidate(name):
        if name == "openvino":
            raise RuntimeError("openvino is not installed")
        return _Stub(name, 5.0 if name == "pytorch" else 9.0)

    selection, _ = select_backend(_key(), ["openvino", "onnxruntime", "pytorch"], open_candidate,
                                  [np.zeros((48, 64, 3), np.uint8)])
    assert selection.backend == "pytorch"
    assert selection.failed == {"openvino": "openvino is not installed"}
    assert "openvino unavailable (openvino is not installed)" in selection.reason()


def test_no_candidate_at_all_is_an_error(cache, stub_timing):
    def broken(name):
        raise RuntimeError(f"{name} broke")

    with pytest.raises(RuntimeError, match="no backend could run: pytorch: pytorch broke"):
        select_backend(_key(), ["pytorch"], broken, [np.zeros((48, 64, 3), np.uint8)])


def test_a_cached_winner_that_is_no_longer_installed_is_measured_again(cache, stub_timing):
    images = [np.zeros((48, 64, 3), np.uint8)]
    select_backend(_key(), ["openvino", "pytorch"], lambda n: _Stub(n, 1.0 if n == "openvino" else 2.0), images)
    selection, _ = select_backend(_key(), ["pytorch"], lambda n: _Stub(n, 2.0), images)
    assert selection.backend == "pytorch" and not selection.cached


def test_real_backends_are_timed_and_the_winner_opened(cache, caplog):
    """The whole path with real engines: a small Mask R-CNN, every backend installed here."""
    images = tuple(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(4))
    probe = AutoProbe(images, batch_size=2, threads=torch.get_num_threads())
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        backend = create_backend("maskrcnn_demo", "random", backend="auto", probe=probe, min_size=96, max_size=128)
    candidates = available_backends("cpu")
    assert backend.name in candidates
    assert any(r.getMessage().startswith(f"backend: {backend.name} (auto: ") for r in caplog.records)
    assert backend.selection.startswith("auto: fastest of ms/frame:")
    stored = json.loads((cache / "autoselect.json").read_text())
    (entry,) = stored.values()
    assert entry["backend"] == backend.name
    assert set(entry["ms_per_frame"]) | set(entry["failed"]) == set(candidates)
    assert all(ms > 0 for ms in entry["ms_per_frame"].values())
    backend.close()
    again = create_backend("maskrcnn_demo", "random", backend="auto", probe=probe, min_size=96, max_size=128)
    assert again.name == backend.name and "cached measurement" in again.selection
    again.close()
