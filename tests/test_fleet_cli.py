"""The fleet's pure parts (inputs, keys, resume and commit, balancing, report, directory)
and its command-line errors. Fast: no Ray cluster starts here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.fleet.assign import StreamSpec, assign_streams, load_streams, parse_stream
from pipeline.fleet.child import last_error_line
from pipeline.fleet.directory import (
    DirectoryServer,
    StreamDirectory,
    directory_entries,
    fetch_streams,
)
from pipeline.fleet.files import (
    COMMIT_MARKER,
    FileJob,
    FleetInputError,
    check_pipeline_args,
    commit_attempt,
    committed_keys,
    expand_inputs,
    make_jobs,
    split_committed,
)
from pipeline.fleet.report import build_files_report, exit_code_for

REPO = Path(__file__).resolve().parents[1]


def spec(name: str, w: int, h: int) -> StreamSpec:
    return StreamSpec(name=name, uri=f"synthetic://?size={w}x{h}", width=w, height=h)


# --- balancing streams over workers -----------------------------------------------------

def test_assignment_balances_pixels_within_the_cap() -> None:
    specs = [spec("hd", 1920, 1080), spec("a", 640, 480), spec("b", 640, 480),
             spec("c", 640, 480), spec("d", 640, 480)]
    groups = assign_streams(specs, max_per_worker=3)
    # the HD stream weighs 6.75 VGA ones: the VGA streams fill the other worker to the cap
    assert [[s.name for s in g] for g in groups] == [["hd", "d"], ["a", "b", "c"]]
    assert all(len(g) <= 3 for g in groups)
    assert sorted(s.name for g in groups for s in g) == sorted(s.name for s in specs)


def test_assignment_counts_even_out_for_equal_streams() -> None:
    specs = [spec(f"s{i}", 640, 480) for i in range(7)]
    groups = assign_streams(specs, max_per_worker=4, workers=3)
    assert sorted(len(g) for g in groups) == [2, 2, 3]
    assert assign_streams(specs, 4, 3) == groups  # deterministic


def test_assignment_rejects_too_few_workers_and_a_zero_cap() -> None:
    specs = [spec(f"s{i}", 64, 48) for i in range(5)]
    with pytest.raises(FleetInputError, match="need at least 3 workers"):
        assign_streams(specs, max_per_worker=2, workers=2)
    with pytest.raises(FleetInputError, match="at least 1"):
        assign_streams(specs, max_per_worker=0)


def test_stream_lines_give_name_uri_and_size() -> None:
    assert parse_stream("front=rtsp://10.0.0.7/x 1920x1080", 0) == StreamSpec(
        "front", "rtsp://10.0.0.7/x", 1920, 1080)
    assert parse_stream("synthetic://?seed=1&size=320x240", 3) == StreamSpec(
        "stream-3", "synthetic://?seed=1&size=320x240", 320, 240)
    assert parse_stream("rtsp://cam/a?x=1", 1).width == 1280  # unknown: DEFAULT_SIZE
    with pytest.raises(FleetInputError, match="bad stream size"):
        parse_stream("rtsp://cam/a 12by7", 0)
    with pytest.raises(FleetInputError, match="unique: a repeated"):
        load_streams(["a=rtsp://x/1", "a=rtsp://x/2"])


# --- inputs, keys, resume, commit ---------------------------------------------------------

def test_inputs_from_globs_lists_and_uris(tmp_path) -> None:
    for name in ("b.mp4", "a.mp4", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{tmp_path / 'c.txt'}\n\nrtsp://cam/1\n")
    found = expand_inputs([str(tmp_path / "*.mp4"), str(tmp_path / "a.mp4")], [str(listing)])
    assert found == [str(tmp_path / "c.txt"), "rtsp://cam/1", str(tmp_path / "a.mp4"),
                     str(tmp_path / "b.mp4")]
    with pytest.raises(FleetInputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.mkv")])
    with pytest.raises(FleetInputError, match="cannot read file list"):
        expand_inputs([], [str(tmp_path / "nope.txt")])


def test_keys_are_stems_made_unique_by_a_hash_only_when_needed() -> None:
    jobs = make_jobs(["/d1/clip.mp4", "/d2/clip.mp4", "/d1/other.mkv"])
    assert jobs[2] == FileJob("/d1/other.mkv", "other")
    assert jobs[0].key.startswith("clip-") and jobs[0].key != jobs[1].key
    assert make_jobs(["/d1/clip.mp4", "/d2/clip.mp4"]) == jobs[:2]  # stable


def test_resume_skips_committed_files_only(tmp_path) -> None:
    jobs = make_jobs(["/x/a.mp4", "/x/b.mp4", "/x/c.mp4"])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / COMMIT_MARKER).write_text("{}")
    (tmp_path / "b").mkdir()  # no marker: not committed (cannot happen via rename, but safe)
    todo, done = split_committed(jobs, committed_keys(tmp_path, jobs))
    assert [j.key for j in todo] == ["b", "c"] and [j.key for j in done] == ["a"]


def test_commit_is_one_rename_and_only_the_first_attempt_wins(tmp_path) -> None:
    first, second = tmp_path / ".partial-1", tmp_path / ".partial-2"
    for attempt, text in ((first, "one"), (second, "two")):
        attempt.mkdir()
        (attempt / "results.jsonl").write_text(text)
        (attempt / COMMIT_MARKER).write_text("{}")
    assert commit_attempt(first, tmp_path / "clip") is True
    assert commit_attempt(second, tmp_path / "clip") is False
    assert (tmp_path / "clip" / "results.jsonl").read_text() == "one"
    assert not first.exists() and not second.exists()


def test_pipeline_args_the_fleet_sets_are_refused() -> None:
    assert check_pipeline_args(["--model", "fcn_demo"]) == ["--model", "fcn_demo"]
    with pytest.raises(FleetInputError, match="--output is set by the fleet"):
        check_pipeline_args(["--output=x.mp4"])


def test_error_line_is_the_pipelines_own(tmp_path) -> None:
    log = tmp_path / "p.log"
    log.write_text("segstream: starting\nerror: source not found: /x.mp4\n")
    assert last_error_line(log, 2) == "source not found: /x.mp4"
    assert last_error_line(tmp_path / "none.log", 9) == "pipeline exited with code 9"


# --- report -------------------------------------------------------------------------------

def test_report_aggregates_nodes_retries_and_failures() -> None:
    def done(key, node, frames, t0, t1):
        return {"key": key, "source": f"/v/{key}.mp4", "status": "done", "node": node,
                "host": "h" + node, "frames": frames, "started": t0, "ended": t1, "wall_s": 1}

    outcomes = [done("a", "n1", 10, 0.0, 5.0), done("b", "n1", 20, 1.0, 9.0),
                done("c", "n2", 30, 0.0, 10.0),
                {"key": "d", "source": "/v/d.mp4", "status": "failed", "reason": "corrupt"}]
    attempts = {"a": ["n1"], "b": ["n1"], "c": ["n3", "n2"], "d": ["n1"]}
    report = build_files_report("r", 100.0, 20.0, outcomes,
                                [{"key": "e", "source": "/v/e.mp4"}], attempts)
    assert report["files"] == {"total": 5, "done": 3, "skipped": 1, "failed": 1}
    assert report["failed"] == [{"file": "/v/d.mp4", "reason": "corrupt"}]
    assert report["frames"] == 60 and report["fps"] == 3.0
    assert report["nodes"]["n1"] == {"host": "hn1", "files": 2, "frames": 30, "busy_s": 13.0,
                                     "span_s": 9.0, "fps": 3.33}
    assert report["retries"] == 1 and report["retried"][0]["nodes"] == ["n3", "n2"]
    assert report["results"]["e"]["status"] == "skipped"
    assert exit_code_for(report) == 1


# --- directory ----------------------------------------------------------------------------

def test_directory_keeps_the_last_endpoint_while_a_worker_restarts() -> None:
    streams = [{"name": "x", "uri": "u0"}, {"name": "y", "uri": "u1"}]
    info = {"worker": 1, "endpoint": "tcp://h:1", "node": "n", "host": "h", "since": 5.0,
            "running": True, "error": None}
    live = directory_entries(info, streams, {})
    assert live["y"]["topic"] == "1" and live["y"]["status"] == "live"
    moving = directory_entries(None, streams, live)
    assert moving["x"]["status"] == "restarting" and moving["x"]["endpoint"] == "tcp://h:1"
    failed = directory_entries({**info, "running": False, "error": "bad uri"}, streams, {})
    assert failed["x"]["status"] == "failed" and failed["x"]["error"] == "bad uri"
    ended = directory_entries({**info, "running": False, "relaunching": True, "error": "killed"}, streams, {})
    assert ended["x"]["status"] == "restarting" and ended["x"]["error"] == "killed"


@pytest.mark.parametrize(("exit_code", "history", "now", "restart", "delay"), [
    (-9, [], 100.0, True, 1.0),  # killed (e.g. the OOM killer): started again after 1 s
    (1, [50.0, 90.0], 100.0, True, 4.0),  # a failed run: the backoff doubles with each recent relaunch
    (1, [60.0, 70.0, 80.0, 90.0], 100.0, True, 16.0),
    (1, [0.0, 1.0, 2.0, 3.0, 4.0], 700.0, True, 1.0),  # relaunches older than 10 min no longer count
    (1, [560.0, 570.0, 580.0, 590.0, 595.0], 600.0, False, 0.0),  # 5 within 10 min: a crash loop, give up
    (0, [], 100.0, False, 0.0),  # its streams ended cleanly: nothing to restart
    (2, [], 100.0, False, 0.0),  # it refused its input: it would again
])
def test_a_stream_pipeline_that_ends_is_relaunched_by_the_policy(exit_code, history, now, restart, delay) -> None:
    from pipeline.fleet.stream_worker import relaunch_decision

    decision = relaunch_decision(exit_code, history, now)
    assert decision.restart is restart, decision
    assert decision.delay_s == delay


def test_directory_serves_json_over_http() -> None:
    directory = StreamDirectory()
    directory.update({"cam": {"endpoint": "tcp://h:1", "topic": "0", "status": "live"}})
    server = DirectoryServer(directory, "127.0.0.1", 0)
    try:
        assert fetch_streams(server.url)["cam"]["endpoint"] == "tcp://h:1"
        assert fetch_streams(server.url + "/cam")["topic"] == "0"
        with pytest.raises(OSError, match="404"):
            fetch_streams(server.url + "/nope")
    finally:
        server.close()


# --- the command line: one line, exit 2, before anything starts ----------------------------

def fleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.fleet", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path, address) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not run")
    run = fleet("files", str(video), "--out", str(tmp_path / "out"), "--address", address)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: cannot reach the Ray cluster at {address}: Connection refused")
    assert "Traceback" not in run.stderr


def test_bad_fleet_inputs_are_one_line_and_exit_2(tmp_path) -> None:
    runs = {
        "no file matches": fleet("files", str(tmp_path / "*.mp4"), "--out", str(tmp_path)),
        "--output is set by the fleet": fleet("files", "x.mp4", "--out", str(tmp_path), "--",
                                               "--output", "y.mp4"),
        "bad --directory": fleet("streams", "rtsp://c/1", "--directory", "nohost"),
        "need at least 2 workers": fleet("streams", "rtsp://c/1", "rtsp://c/2",
                                         "--max-per-worker", "1", "--workers", "1"),
    }
    for expected, run in runs.items():
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1, run.stderr
        assert lines[0].startswith("error: ") and expected in lines[0]
