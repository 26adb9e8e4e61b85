"""The published speed figures come from the benchmark's JSON and describe the default."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

from pipeline.config import load_config

FIGURES = REPO / "docs" / "bench" / "cpu.json"


def test_docs_are_generated_from_the_committed_figures():
    """docs/BENCHMARKS.md and the README's table equal what the script makes of the JSON."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmarks_doc.py"), str(FIGURES), "--check"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_default_case_is_the_shipped_default():
    """A figure that no longer matches the default config is a bug: re-run the benchmark."""
    figures = json.loads(FIGURES.read_text())
    default = load_config(REPO / "configs" / "default.yaml")
    (case,) = [c for c in figures["cases"] if c["label"] == "default"]
    assert case["source"] == default.source.uris[0]
    assert case["model"] == default.model.name and case["weights"] == default.model.weights
    assert case["batch_size"] == default.batching.batch_size
    assert case.get("tracking", False) == default.tracking.enabled
    assert case["video"] is bool(default.output.video)
    assert case["costs"]["core_ms"]["infer"] > 0
    assert figures["command"].startswith("python -m pipeline.bench --suite full")
    assert figures["commit"] and figures["machine"]["cores"] >= 1


def test_check_mode_notices_a_stale_figure(tmp_path):
    figures = json.loads(FIGURES.read_text())
    figures["cases"][0]["pipeline_fps"] = 12345.678
    changed = tmp_path / "cpu.json"
    changed.write_text(json.dumps(figures))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmarks_doc.py"), str(changed), "--check"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 1 and "stale" in result.stderr
