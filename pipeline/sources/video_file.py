"""Recorded video files, decoded with PyAV (FFmpeg): any container and codec FFmpeg reads.

Frames come out in presentation order (the decoder reorders B-frames), as upright 8-bit RGB:

* every pixel format (8/10/12-bit YUV, full-range ``yuvj*``, gray, RGB, odd sizes) goes
  through swscale with ``VideoFrame.to_ndarray(format="rgb24")``, which uses the frame's own
  colorspace and range;
* the display rotation (``DISPLAYMATRIX`` side data, exposed by PyAV as
  ``VideoFrame.rotation`` in degrees counter-clockwise) is applied with ``np.rot90``; the
  rotation is rounded to a multiple of 90 degrees and mirror flips in the matrix are not
  applied;
* the sample aspect ratio is not applied: frames keep the stored pixel grid.

Damaged files are decoded as far as possible: packets the demuxer or decoder rejects are
skipped and counted in :attr:`VideoFileSource.decode_errors`. Only a file that yields no frame
at all raises :class:`SourceError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from pipeline.sources.av_frames import (
    av_error_reason,
    budgeted_codec_threads,
    decode_packet,
    frame_rotation,
    frame_to_rgb,
    nominal_fps,
    quarter_turns,
    to_fraction,
)
from pipeline.sources.base import Frame, Source, SourceError, SourceInfo

__all__ = ["VideoFileSource"]

# Give up on a file after this many demux errors in a row (the reader is not advancing).
_MAX_CONSECUTIVE_DEMUX_ERRORS = 32
# How many packets the rotation probe may read before giving up on finding a frame.
_PROBE_PACKETS = 256


class VideoFileSource(Source):
    """Frames of one video file, in presentation order.

    Args:
        path: the file (any container/codec FFmpeg can demux and decode).
        max_frames: stop after this many frames (``None``: all).
        thread_type: decoder threading, ``"AUTO"`` (frame + slice), ``"FRAME"``,
            ``"SLICE"`` or ``"NONE"``.
        thread_count: decoder threads (0: FFmpeg picks from the CPU count; None: the codec
            threads of the stage's resource budget, ``SEGSTREAM_CODEC_THREADS``, else 0).

    Attributes:
        decode_errors: packets skipped because the demuxer or decoder rejected them.

    Raises:
        SourceError: the file is missing, is not a readable video, has no video stream, or
            (while iterating) yields no frame at all.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_frames: int | None = None,
        thread_type: str = "AUTO",
        thread_count: int | None = None,
    ) -> None:
        self.uri = str(path)
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}")
        if self.path.is_dir():
            raise SourceError(f"cannot open video '{self.path}': is a directory")
        if max_frames is not None and max_frames < 0:
            raise SourceError(f"max_frames must be >= 0, got {max_frames}")
        self.max_frames = max_frames
        self.thread_type = thread_type
        self.thread_count = budgeted_codec_threads() if thread_count is None else thread_count
        self.decode_errors = 0
        self._container: av.container.InputContainer | None = self._open()
        self._stream_index = self._pick_stream(self._container).index
        self._fresh = True  # the open container has not been read from yet
        self._info: SourceInfo | None = None

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise SourceError(f"cannot open video '{self.path}': {av_error_reason(exc)}") from exc
        except OSError as exc:
            raise SourceError(f"cannot open video '{self.path}': {exc.strerror or exc}") from exc
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            container.close()
            raise SourceError(
                f"no video stream in '{self.path}' (streams found: {', '.join(kinds)})"
            )
        return container

    def _pick_stream(self, container: av.container.InputContainer) -> av.video.stream.VideoStream:
        """The main video stream: FFmpeg's best pick, skipping attached cover pictures."""
        candidates = [
            s
            for s in container.streams.video
            if not (s.disposition & av.stream.Disposition.attached_pic)
        ] or list(container.streams.video)
        try:
            best = container.streams.best("video")
        except (AttributeError, av.FFmpegError, ValueError):
            best = None
        return best if best in candidates else candidates[0]

    # -- info --------------------------------------------------------------------------------

    def _probe_rotation(self) -> int:
        """Rotation of the first decodable frame, read through a separate short-lived open."""
        try:
            with av.open(str(self.path), mode="r", metadata_errors="ignore") as container:
                stream = container.streams[self._stream_index]
                for n, packet in enumerate(container.demux(stream)):
                    if n >= _PROBE_PACKETS:
                        break
                    decoded = decode_packet(packet)
                    if decoded:
                        return frame_rotation(decoded[0], stream)
        except (av.FFmpegError, OSError, ValueError):
            pass
        return 0

    def info(self) -> SourceInfo:
        """Size after rotation, frame rate, frame count (exact or estimated) and time base."""
        if self._info is not None:
            return self._info
        container = self._container if self._container is not None else self._open()
        try:
            stream = container.streams[self._stream_index]
            cc = stream.codec_context
            width = int(cc.width or stream.width or 0)
            height = int(cc.height or stream.height or 0)
            rotation = self._probe_rotation()
            if quarter_turns(rotation) % 2:
                width, height = height, width
            fps = nominal_fps(stream)
            time_base = to_fraction(stream.time_base)
            frame_count: int | None = (
                int(stream.frames) if stream.frames and stream.frames > 0 else None
            )
            duration_s: float | None = None
            if stream.duration is not None and time_base is not None:
                duration_s = float(stream.duration * time_base)
            elif container.duration is not None:
                duration_s = container.duration / av.time_base
            if frame_count is None and duration_s is not None and fps is not None:
                frame_count = max(1, round(duration_s * fps)) if duration_s > 0 else None
            if frame_count is not None and self.max_frames is not None:
                frame_count = min(frame_count, self.max_frames)
            self._info = SourceInfo(
                width=width,
                height=height,
                fps=fps,
                frame_count=frame_count,
                time_base=time_base,
                live=False,
                extra={
                    "kind": "video_file",
                    "path": str(self.path),
                    "container": container.format.name,
                    "codec": cc.name,
                    "pix_fmt": cc.format.name if cc.format is not None else None,
                    "rotation": rotation,
                    "duration_s": duration_s,
                    "frame_count_exact": bool(stream.frames and stream.frames > 0),
                },
            )
        finally:
            if container is not self._container:
                container.close()
        return self._info

    # -- decoding ----------------------------------------------------------------------------

    def _decoded(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[av.VideoFrame]:
        """Decoded frames of ``stream``; bad packets are skipped and counted."""
        flushed = False
        consecutive_demux_errors = 0
        while True:
            try:
                for packet in container.demux(stream):
                    consecutive_demux_errors = 0
                    if packet.size == 0:
                        flushed = True  # the demuxer's end-of-stream flush packet
                    decoded = decode_packet(packet)
                    if decoded is None:
                        self.decode_errors += 1
                        continue
                    yield from decoded
                break  # demuxer reached the end of the file
            except av.FFmpegError:
                # A damaged container: skip what the demuxer cannot read and resume after it.
                self.decode_errors += 1
                consecutive_demux_errors += 1
                if consecutive_demux_errors >= _MAX_CONSECUTIVE_DEMUX_ERRORS:
                    break
        if not flushed:
            try:
                yield from stream.codec_context.decode(None)
            except (av.FFmpegError, ValueError, EOFError):
                self.decode_errors += 1

    def frames(self) -> Iterator[Frame]:
        """Yield every frame (up to ``max_frames``) as an upright RGB :class:`Frame`.

        Timestamps are the stream's (``time_base`` = the stream time base); a frame without
        one gets ``index / fps`` in that time base (kept above the previous pts).
        """
        if self._fresh and self._container is not None:
            container = self._container
        else:
            self.close()
            container = self._container = self._open()
        self._fresh = False
        stream = container.streams[self._stream_index]
        stream.thread_type = self.thread_type
        stream.codec_context.thread_count = self.thread_count
        time_base = to_fraction(stream.time_base)
        fps = to_fraction(stream.average_rate) or to_fraction(stream.guessed_rate)
        step = (1 / (fps * time_base)) if fps is not None and time_base is not None else Fraction(1)

        index = 0
        last_pts: int | None = None
        if self.max_frames == 0:
            return
        for av_frame in self._decoded(container, stream):
            image = frame_to_rgb(av_frame, quarter_turns(frame_rotation(av_frame, stream)))
            pts = av_frame.pts
            if pts is None:
                pts = round(index * step)
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + max(1, round(step))
            last_pts = pts
            yield Frame(
                image=image,
                index=index,
                pts=pts,
                time_base=time_base,
                capture_ns=time.time_ns(),
            )
            index += 1
            if self.max_frames is not None and index >= self.max_frames:
                return
        if index == 0:
            raise SourceError(
                f"no frame could be decoded from '{self.path}' "
                f"({self.decode_errors} undecodable packets)"
            )

    def close(self) -> None:
        """Close the file (a later :meth:`frames` call reopens it)."""
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None
