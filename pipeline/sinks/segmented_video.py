"""An overlay video written as closed segments, joined into one file at the end.

Why: a process that is killed mid-file leaves an MP4 without its index, and frames still
inside the encoder are lost. Written in closed segments of ``segment_frames`` frames, every
finished segment is a complete file on disk, so a restarted publish stage only has to
re-encode the segment that was open (its frames are still held in the ring). Each segment
starts with a key frame; :meth:`SegmentedVideoWriter.finish` copies the packets of all
segments, without re-encoding, into the requested file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.sinks.video_writer import VideoWriter, VideoWriterError, container_options


def stream_video_path(path: str, stream: str, streams: int) -> str:
    """One overlay video per stream: ``out.mp4`` for one stream, ``out-0.mp4``, ``out-1.mp4``... for several."""
    if streams <= 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{stream}{p.suffix}"))


def segment_path(path: Path, index: int, run: str) -> Path:
    """Where segment ``index`` of the video ``path`` is written by run ``run`` (hidden, next
    to it). The run id is in the name so that a run only ever finds, joins or deletes its
    own segments, never those of another run writing the same output."""
    return path.with_name(f".{path.name}.{run}.seg-{index:05d}{path.suffix}")


def existing_segments(path: Path, run: str) -> list[Path]:
    """The segment files run ``run`` wrote for the video ``path``, in order."""
    return sorted(path.parent.glob(f".{path.name}.{run}.seg-*{path.suffix}"))


def _segment_index(segment: Path) -> int:
    return int(segment.stem.rsplit("-", 1)[1])


class SegmentedVideoWriter:
    """Same interface as :class:`VideoWriter` (``write``, ``close``), plus segment state.

    ``state()`` describes the closed segments (count, frames, last pts); a writer created
    with ``resume=state`` deletes any newer, unfinished segment and carries on after them.

    Args:
        path: the joined video (segments are written beside it, see :func:`segment_path`).
        video, video_options: what every segment is made with, passed on to
            :class:`VideoWriter` as they are: ``width, height, fps``, then ``time_base``,
            ``codec``, ``options``, ``pix_fmt``, ``threads``, as documented there (where
            each segment's timestamps start, ``first_pts`` etc., is this writer's to set).
        segment_frames: frames per segment.
        resume: a :meth:`state` of an earlier writer of this run, to carry on after.
        run: the run id in the segments' names (``None``: a new one).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *video: Any,
        segment_frames: int = 32,
        resume: dict | None = None,
        run: str | None = None,
        **video_options: Any,
    ) -> None:
        self.path = Path(path)
        self.run = run or uuid.uuid4().hex[:8]  # the run id: names this writer's segments
        self._video = video
        self._video_options = video_options
        self.segment_frames = int(segment_frames)
        resume = resume or {}
        self.segments = int(resume.get("segments", 0))  # closed segments
        self.frames_committed = int(resume.get("frames", 0))  # frames in closed segments
        self._first_pts = resume.get("first_pts")
        self._last_pts = resume.get("last_pts")
        for stale in existing_segments(self.path, self.run):
            if _segment_index(stale) >= self.segments:
                stale.unlink()  # the segment being written when a publish stage died
        self._writer: VideoWriter | None = None
        self._open()  # checks path and codec now, so a bad output fails at setup

    def _open(self) -> None:
        path = segment_path(self.path, self.segments, self.run)
        if self.path.suffix.lower() == ".avi":
            # AVI stores frame numbers, not timestamps: each segment counts from 0 and
            # join_segments lays them end to end
            self._writer = VideoWriter(path, *self._video, **self._video_options)
            return
        self._writer = VideoWriter(
            path, *self._video, **self._video_options,
            first_pts=self._first_pts, frame_offset=self.frames_committed, previous_pts=self._last_pts,
        )

    @property
    def frames_written(self) -> int:
        return self.frames_committed + (self._writer.frames_written if self._writer else 0)

    def state(self) -> dict:
        """What a restarted writer needs to carry on after the closed segments."""
        return {"segments": self.segments, "frames": self.frames_committed,
                "first_pts": self._first_pts, "last_pts": self._last_pts}

    def write(self, image: np.ndarray, pts: int | None = None) -> bool:
        """Encode one frame; True when this frame closed a segment (every frame written so
        far is now safely on disk)."""
        if self._writer is None:
            self._open()
        self._writer.write(image, pts)
        if self._writer.frames_written >= self.segment_frames:
            self._close_segment()
            return True
        return False

    def _close_segment(self) -> None:
        writer = self._writer
        self._writer = None
        writer.close()
        self._first_pts = writer.first_pts
        self._last_pts = writer.last_pts
        self.segments += 1
        self.frames_committed += writer.frames_written

    def close(self) -> None:
        """Close the open segment and join all segments into the requested file."""
        if self._writer is not None:
            if self._writer.frames_written:
                self._close_segment()
            else:
                self._writer.close()
                segment_path(self.path, self.segments, self.run).unlink(missing_ok=True)
                self._writer = None
        parts = [segment_path(self.path, i, self.run) for i in range(self.segments)]
        if not parts:
            VideoWriter(self.path, *self._video, **self._video_options).close()  # an empty but valid file
            return
        _join_into(parts, self.path)


def _join_into(parts: list[Path], path: Path) -> None:
    """Make ``path`` of the segments ``parts`` (renamed if there is one) and remove them.

    The joined file is written under a hidden name beside ``path`` and renamed over it, so
    ``path`` is never seen half-written."""
    if len(parts) == 1:
        os.replace(parts[0], path)
        return
    joining = parts[0].with_name(parts[0].name.replace(".seg-", ".joining-", 1))
    try:
        join_segments(parts, joining)  # same extension: same container
        os.replace(joining, path)
    finally:
        joining.unlink(missing_ok=True)
    for part in parts:
        part.unlink()


def join_segments(parts: list[Path], path: Path) -> None:
    """Copy every packet of ``parts`` (same codec and settings, timestamps continuing) into
    one file, without re-encoding."""
    with av.open(str(parts[0])) as first:
        template = first.streams.video[0]
        options = container_options(path.suffix.lower(), template.time_base)
        try:
            output = av.open(str(path), mode="w", container_options=options)
        except (av.FFmpegError, OSError) as exc:
            raise VideoWriterError(f"cannot write video '{path}': {exc}") from exc
        with output:
            stream = output.add_stream_from_template(template)
            next_dts = None  # where the previous segment's timestamps ended
            for part in parts:
                with av.open(str(part)) as container:
                    packets = [p for p in container.demux(container.streams.video[0]) if p.size]
                    _fill_missing_dts(packets)
                    if not packets:
                        continue
                    # containers that store no timestamps (AVI) restart each file at 0
                    first = packets[0].dts
                    shift = next_dts - first if next_dts is not None and first < next_dts else 0
                    for packet in packets:
                        packet.dts += shift
                        packet.pts += shift
                        next_dts = max(next_dts or 0, packet.dts + max(1, packet.duration or 0))
                        packet.stream = stream
                        output.mux(packet)


def _fill_missing_dts(packets: list) -> None:
    """Matroska stores only pts: the first packets of a stream with B-frames come back
    without dts. Give them the decode times just before the first known one."""
    known = next((i for i, p in enumerate(packets) if p.dts is not None), None)
    for i, packet in enumerate(packets):
        if packet.pts is None:
            packet.pts = packet.dts
        if packet.dts is None:
            if known is None:
                packet.dts = packet.pts
            else:
                step = max(1, packets[known].duration or 1)
                packet.dts = packets[known].dts - (known - i) * step


def salvage_segments(path: str | os.PathLike[str], run: str) -> int:
    """After a failed run: join the segments run ``run`` wrote for ``path`` that are complete
    files into ``path`` (a playable video of what was finished) and delete them all; other
    runs' segments are not touched, and a run that wrote none leaves ``path`` alone.
    Returns the number of segments kept."""
    path = Path(path)
    parts = existing_segments(path, run)
    readable = []
    for part in parts:
        try:
            with av.open(str(part)) as container:
                if container.streams.video and container.streams.video[0].frames != 0:
                    readable.append(part)
        except (av.FFmpegError, OSError):
            break  # the segment being written when the run stopped
    try:
        if readable:
            _join_into(readable, path)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    return len(readable)
