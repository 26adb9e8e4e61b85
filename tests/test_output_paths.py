"""Bad output paths (overlay video, JSON lines, report) fail within seconds, before the
model loads, with one line naming the user's path and exit code 2; checking them creates
and changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import leftovers, run_cli

from pipeline.config import config_from_dict
from pipeline.errors import ConfigError
from pipeline.output_paths import check_output_paths


def _config(**output):
    return config_from_dict({"output": {"video": None, "publish": None, **output}})


def _blocker(tmp_path: Path) -> Path:
    """A regular file where a directory would have to be."""
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return path


BAD = [
    ("unknown extension", lambda t: ("video", str(t / "out.xyz")), "unknown video format"),
    ("no extension", lambda t: ("video", str(t / "overlay")), "unknown video format"),
    ("video under a file", lambda t: ("video", str(_blocker(t) / "sub" / "out.mp4")), "is not a directory"),
    ("video is a directory", lambda t: ("video", str(t)), "is a directory"),
    ("video under /proc", lambda t: ("video", "/proc/segstream-test/out.mp4"), "not writable"),
    ("results under a file", lambda t: ("save_results", str(_blocker(t) / "r.jsonl")), "is not a directory"),
    ("results under /sys", lambda t: ("save_results", "/sys/r.jsonl"), "not writable"),
    ("report under a file", lambda t: ("report", str(_blocker(t) / "x" / "report.json")), "is not a directory"),
    ("report under /proc", lambda t: ("report", "/proc/report.json"), "not writable"),
]


@pytest.mark.parametrize("case, output, reason", BAD, ids=[c[0] for c in BAD])
def test_bad_output_path_is_named_with_its_key(tmp_path, case, output, reason):
    key, path = output(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as err:
        check_output_paths(_config(**{key: path}))
    assert f"output.{key}" in str(err.value) and path in str(err.value) and reason in str(err.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created


def test_good_output_paths_pass_and_nothing_is_created(tmp_path):
    existing = tmp_path / "old.mp4"
    existing.write_bytes(b"previous run")
    check_output_paths(_config(video=str(tmp_path / "new" / "deeper" / "out.webm"),
                               save_results=str(existing.with_suffix(".jsonl")), report=str(tmp_path / "r.json")))
    check_output_paths(_config(video=str(existing)))  # overwriting our own earlier output is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mp4"]
    assert existing.read_bytes() == b"previous run"


CLI_CASES = [
    ("--output", lambda t: str(t / "out.xyz")),
    ("--output", lambda t: str(_blocker(t) / "out.mp4")),
    ("--output", lambda t: "/proc/segstream/out.mp4"),
    ("--save-results", lambda t: str(_blocker(t) / "results.jsonl")),
    ("--report", lambda t: str(_blocker(t) / "report.json")),
    ("--report", lambda t: "/proc/report.json"),
]


@pytest.mark.parametrize("flag, path", CLI_CASES, ids=[f"{f} {i}" for i, (f, _) in enumerate(CLI_CASES)])
def test_cli_fails_fast_on_a_bad_output_path(tmp_path, flag, path):
    target = path(tmp_path)
    args = ["--output", str(tmp_path / "ok.mp4"), "--publish", "none", "--no-progress", flag, target]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    start = time.monotonic()
    result = run_cli(args, timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and target in lines[0], result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s: the path must be checked before the model loads"
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing created or touched
    assert not leftovers()
