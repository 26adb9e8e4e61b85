"""VideoWriter round trips: encode with PyAV, reopen, compare count, rate, timestamps, pixels."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.sinks.video_writer import VideoWriter, VideoWriterError
from pipeline.sources.video_file import VideoFileSource
from tests.media import frame_pattern, frame_signature, make_video

W, H = 160, 96


def decode(path: Path) -> tuple[av.video.stream.VideoStream, list[tuple[float, int, tuple]]]:
    """(stream facts, [(pts seconds, signature, (h, w))]) of the file's first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.format.name,
            "rate": stream.average_rate or stream.guessed_rate,
            "frames": stream.frames,
        }
        out = []
        for frame in container.decode(stream):
            image = frame.to_ndarray(format="rgb24")
            out.append((float(frame.pts * frame.time_base), image))
    return facts, out


@pytest.mark.parametrize(
    ("ext", "codec", "fps", "time_base", "start"),
    [
        (".mp4", "h264", Fraction(25), Fraction(1, 12800), 0),
        (".mp4", "h264", Fraction(30000, 1001), Fraction(1, 90000), 3003 * 7),
        (".mov", "h264", Fraction(24), Fraction(1, 15360), 640),
        (".mkv", "h264", Fraction(30), Fraction(1, 1000), 100),
        (".webm", "vp9", Fraction(30), Fraction(1, 1000), 0),
        (".avi", "mjpeg", Fraction(25), Fraction(1, 25), 0),
    ],
)
def test_round_trip_keeps_count_rate_and_timestamps(
    tmp_path: Path, ext: str, codec: str, fps: Fraction, time_base: Fraction, start: int
) -> None:
    n = 12
    step = int((1 / fps) / time_base)
    pts_in = [start + i * step for i in range(n)]
    path = tmp_path / f"out{ext}"
    with VideoWriter(path, W, H, fps, time_base) as writer:
        for i, pts in enumerate(pts_in):
            writer.write(frame_pattern(i, W, H), pts)
    assert writer.frames_written == n
    assert writer.pts_fixed == 0
    assert writer.encoded_size == (W, H)

    facts, frames = decode(path)
    assert facts["codec"] == codec
    assert facts["rate"] == fps
    assert len(frames) == n
    assert [frame_signature(img) for _, img in frames] == list(range(n))
    assert [img.shape for _, img in frames] == [(H, W, 3)] * n
    seconds = [t for t, _ in frames]
    assert seconds == pytest.approx([float(p * time_base) for p in pts_in], abs=1e-6)


def test_variable_frame_rate_timestamps_survive(tmp_path: Path) -> None:
    time_base = Fraction(1, 90000)
    pts_in = [0, 3000, 6000, 15000, 18000, 30000, 33000, 36000]  # gaps: dropped camera frames
    path = tmp_path / "vfr.mkv"
    with VideoWriter(path, W, H, Fraction(30), time_base) as writer:
        for i, pts in enumerate(pts_in):
            writer.write(frame_pattern(i, W, H), pts)
    _, frames = decode(path)
    assert [frame_signature(img) for _, img in frames] == list(range(len(pts_in)))
    assert [t for t, _ in frames] == pytest.approx([p / 90000 for p in pts_in], abs=1e-3)


def test_source_to_writer_round_trip_with_bframes(tmp_path: Path) -> None:
    src_path = make_video(tmp_path / "src.mp4", 15, W, H, "libx264", fps=25, bframes=2)
    source = VideoFileSource(src_path)
    info = source.info()
    out = tmp_path / "overlay.mp4"
    with source, VideoWriter(out, info.width, info.height, info.fps, info.time_base) as writer:
        src_frames = []
        for frame in source.frames():
            src_frames.append(frame)
            writer.write(frame.image, frame.pts)
    reopened = VideoFileSource(out)
    out_info = reopened.info()
    assert out_info.frame_count == info.frame_count == 15
    assert out_info.fps == info.fps
    out_frames = list(reopened.frames())
    reopened.close()
    assert [f.pts * f.time_base for f in out_frames] == [f.pts * f.time_base for f in src_frames]
    assert [frame_signature(f.image) for f in out_frames] == list(range(15))


@pytest.mark.parametrize(
    ("ext", "expected_size"),
    [(".mp4", (1280, 720)), (".webm", (1279, 719)), (".avi", (1279, 719))],
)
def test_odd_size_input(tmp_path: Path, ext: str, expected_size: tuple[int, int]) -> None:
    width, height = 1279, 719
    path = tmp_path / f"odd{ext}"
    with VideoWriter(path, width, height, 25) as writer:
        for i in range(3):
            writer.write(frame_pattern(i, width, height))
    assert writer.encoded_size == expected_size
    assert writer.padded == (expected_size != (width, height))
    _, frames = decode(path)
    assert len(frames) == 3
    for i, (_, img) in enumerate(frames):
        assert (img.shape[1], img.shape[0]) == expected_size
        assert frame_signature(img[:height, :width]) == i
        if writer.padded:  # the padding repeats the last column / row
            assert np.abs(img[:, width].astype(int) - img[:, width - 1].astype(int)).mean() < 8
            assert np.abs(img[height].astype(int) - img[height - 1].astype(int)).mean() < 8


def test_missing_and_non_increasing_pts(tmp_path: Path) -> None:
    path = tmp_path / "fix.mkv"
    with VideoWriter(path, W, H, Fraction(25)) as writer:  # time_base None -> 1/25
        writer.write(frame_pattern(0, W, H))  # index 0
        writer.write(frame_pattern(1, W, H))  # index 1
        writer.write(frame_pattern(2, W, H), 5)
        writer.write(frame_pattern(3, W, H), 5)  # duplicate -> 6
        writer.write(frame_pattern(4, W, H), 2)  # backwards -> 7
    assert writer.pts_fixed == 2
    _, frames = decode(path)
    assert [frame_signature(img) for _, img in frames] == [0, 1, 2, 3, 4]
    assert [t for t, _ in frames] == pytest.approx([0, 0.04, 0.2, 0.24, 0.28], abs=1e-3)


def test_codec_override_and_options(tmp_path: Path) -> None:
    path = tmp_path / "ffv1.mkv"
    with VideoWriter(path, W, H, 25, codec="ffv1", options={"level": "3"}) as writer:
        for i in range(4):
            writer.write(frame_pattern(i, W, H))
    facts, frames = decode(path)
    assert facts["codec"] == "ffv1"
    assert [frame_signature(img) for _, img in frames] == [0, 1, 2, 3]


def test_exception_inside_context_still_finishes_file(tmp_path: Path) -> None:
    path = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, W, H, 25) as writer:
            for i in range(5):
                writer.write(frame_pattern(i, W, H))
            raise RuntimeError("boom")
    _, frames = decode(path)
    assert len(frames) == 5
    writer.close()  # idempotent
    with pytest.raises(VideoWriterError, match="writer is closed"):
        writer.write(frame_pattern(0, W, H))


def test_errors(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir" / "out.mp4"
    with pytest.raises(VideoWriterError, match=f"cannot write video '{missing_dir}': directory"):
        VideoWriter(missing_dir, W, H, 25)
    a_dir = tmp_path / "adir.mp4"
    a_dir.mkdir()
    with pytest.raises(VideoWriterError, match=f"cannot write video '{a_dir}'"):
        VideoWriter(a_dir, W, H, 25)
    with pytest.raises(VideoWriterError, match=r"cannot write video '.*out\.nosuchext'"):
        VideoWriter(tmp_path / "out.nosuchext", W, H, 25)
    with pytest.raises(VideoWriterError, match="encoder 'no-such-codec' unavailable"):
        VideoWriter(tmp_path / "x.mkv", W, H, 25, codec="no-such-codec")
    with VideoWriter(tmp_path / "shape.mkv", W, H, 25) as writer:
        with pytest.raises(ValueError, match="expected a 96x160x3 uint8 image"):
            writer.write(np.zeros((H, W + 2, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((H, W, 3), np.float32))
        writer.write(frame_pattern(0, W, H))
