"""Encode RGB frames into a video file with PyAV (FFmpeg), keeping the source's timestamps.

Codec by container (override with ``codec=``):

=========================  ===============  ============  =================================
extension                  codec            pixel format  defaults
=========================  ===============  ============  =================================
.mp4 .m4v .mov .mkv        libx264          yuv420p       preset ultrafast, crf 20
.webm                      libvpx-vp9       yuv420p       realtime, cpu-used 8, crf 32
.avi                       mjpeg            yuvj420p      qscale 3
(codec="ffv1", .mkv)       ffv1             bgr0          lossless: decodes to the exact input
other                      the muxer's default video codec
=========================  ===============  ============  =================================

Timestamps: every frame is given the pts it had in the source, in the source ``time_base``
(the encoder time base is set to it, and PyAV rescales packets to whatever time base the
muxer picks), so the output has the input's frame count, frame rate and timestamps. A
missing pts becomes ``index / fps``; a pts that does not increase is moved to
``previous + 1`` (counted in :attr:`VideoWriter.pts_fixed`). AVI has no timestamps, only a
constant rate: there the time base is ``1/fps``, pts are rounded to it and the first frame
starts the file at 0 (AVI cannot store a start offset; later gaps become empty frames).

Odd sizes: encoders such as libx264/libx265 cannot encode 4:2:0 / 4:2:2 at odd widths or
heights. For those the frame is padded to the next even size by repeating its last column
and/or row, so the output is at most one pixel wider/taller than the input
(:attr:`VideoWriter.encoded_size`); VP9, MJPEG and FFV1 encode odd sizes as they are.

Reproducibility: lossy encoders are not bit-reproducible run to run here (libx264 gave two
different encodings of the same 16 frames in 40 runs), so "the same overlay" is checked on
the frames handed to the encoder, or with FFV1, whose decoded frames are the input exactly.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from pipeline.errors import PipelineError

__all__ = ["VideoWriter", "VideoWriterError", "DEFAULT_CODECS"]


class VideoWriterError(PipelineError):
    """The output video cannot be created or written; the message names the file."""


DEFAULT_CODECS: dict[str, str] = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "mjpeg",
}

# Tried in order when the preferred encoder is missing from this FFmpeg build.
_FALLBACKS: dict[str, tuple[str, ...]] = {
    "libx264": ("libx264", "libopenh264", "h264", "mpeg4"),
    "libvpx-vp9": ("libvpx-vp9", "libvpx", "libaom-av1"),
}

_DEFAULT_OPTIONS: dict[str, dict[str, str]] = {
    # ultrafast: the overlay is a preview of the results, and encoding must not cost more
    # than the model. Measured at 1280x720 on the CI machine, one thread: veryfast 53
    # core-ms a frame, superfast 34, ultrafast 12 (files about 1.7x larger than veryfast)
    "libx264": {"preset": "ultrafast", "crf": "20"},
    "libx265": {"preset": "veryfast", "crf": "22", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "2M"},
    # MJPEG quality 3 on the 1..31 scale (3 * FF_QP2LAMBDA), as ``ffmpeg -q:v 3``.
    "mjpeg": {"flags": "+qscale", "global_quality": str(3 * 118)},
}

_DEFAULT_PIX_FMT: dict[str, str] = {
    "libx264": "yuv420p",
    "libx265": "yuv420p",
    "libvpx-vp9": "yuv420p",
    "libvpx": "yuv420p",
    "libaom-av1": "yuv420p",
    "mpeg4": "yuv420p",
    "mjpeg": "yuvj420p",
    "ffv1": "bgr0",  # lossless RGB: the decoded overlay is exactly what was drawn
}

# Encoders that take odd widths/heights even with subsampled chroma.
_ODD_SIZE_OK = frozenset({"libvpx", "libvpx-vp9", "mjpeg", "ffv1", "png", "rawvideo", "libaom-av1"})

# Containers that store a constant frame rate instead of timestamps.
_CFR_FORMATS = frozenset({"avi"})


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - unknown name or decoder-only: not usable
        return False
    return True


def _to_fraction(value: Fraction | float | int | str, what: str) -> Fraction:
    try:
        frac = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"invalid {what} {value!r}") from exc
    if frac <= 0:
        raise ValueError(f"invalid {what} {value!r}: must be > 0")
    return frac


def container_options(ext: str, time_base: Fraction) -> dict[str, str]:
    """Muxer options for a file of this extension whose frames use ``time_base``."""
    options: dict[str, str] = {}
    if ext in (".mp4", ".m4v", ".mov") and time_base.numerator == 1 and time_base.denominator < 2**31:
        # The start offset goes into an edit list in the movie timescale (default 1/1000):
        # use the frames' own time base so a non-zero first pts survives exactly.
        options["movie_timescale"] = str(time_base.denominator)
    return options


class VideoWriter:
    """Write H x W x 3 uint8 RGB frames to a video file.

    Args:
        path: output file; its extension picks the container (and the default codec).
        width, height: frame size every :meth:`write` call must match.
        fps: nominal frame rate (stored in the stream, used for frames without pts).
        time_base: unit of the ``pts`` given to :meth:`write` (the source's time base);
            ``None`` means ``1/fps`` (pts = frame number).
        codec: encoder name (``None``: by extension, see the module docs).
        options: encoder options, merged over the codec defaults (e.g. ``{"crf": "18"}``).
        pix_fmt: encoder pixel format (``None``: by codec).
        first_pts, frame_offset, previous_pts: for a file that continues an earlier one (a
            segment): the first source pts of the whole video, the number of frames before
            this file and the last encoder pts written, so timestamps carry on exactly.
        threads: encoder threads (``None``: the encoder's default, about 1.5 per core).

    Use as a context manager, or call :meth:`close` to flush the encoder and finish the file.

    Raises:
        VideoWriterError: the path cannot be written, the container or codec is unknown.
    """

    # Long on purpose: the encoder's settings, each checked with its own clear error before FFmpeg sees it.
    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: Fraction | float | int,
        time_base: Fraction | None = None,
        codec: str | None = None,
        options: dict[str, str] | None = None,
        *,
        pix_fmt: str | None = None,
        first_pts: int | None = None,
        frame_offset: int = 0,
        previous_pts: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.threads = threads
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"invalid video size {width}x{height}")
        self.width = int(width)
        self.height = int(height)
        self.fps = _to_fraction(fps, "frame rate")
        self.time_base = (
            _to_fraction(time_base, "time base") if time_base is not None else 1 / self.fps
        )
        self.frames_written = 0
        self.frame_offset = int(frame_offset)
        self.pts_fixed = 0  # pts moved forward because they did not increase
        self._last_pts: int | None = previous_pts
        self._first_pts: int | None = first_pts
        self._closed = False

        ext = self.path.suffix.lower()
        self.codec = self._choose_codec(codec, ext)
        self.pix_fmt = pix_fmt or _DEFAULT_PIX_FMT.get(self.codec) or self._first_pix_fmt()
        self.encoded_size = self._encoded_size()
        self.padded = self.encoded_size != (self.width, self.height)

        parent = self.path.parent
        if not parent.is_dir():
            raise VideoWriterError(
                f"cannot write video '{self.path}': directory '{parent}' does not exist"
            )
        # FFmpeg opens the file only when the header is written (first frame): check now.
        try:
            with open(self.path, "ab"):
                pass
        except OSError as exc:
            raise VideoWriterError(
                f"cannot write video '{self.path}': {exc.strerror or exc}"
            ) from exc
        try:
            self._container = av.open(str(self.path), mode="w", container_options=container_options(ext, self.time_base))
        except av.FFmpegError as exc:
            raise VideoWriterError(
                f"cannot write video '{self.path}': {getattr(exc, 'strerror', None) or exc}"
            ) from exc
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise VideoWriterError(f"cannot write video '{self.path}': {reason}") from exc

        try:
            self._setup_stream(options)
        except BaseException:
            self._abort()
            raise

    # -- setup -------------------------------------------------------------------------------

    @staticmethod
    def _choose_codec(codec: str | None, ext: str) -> str:
        if codec is not None:
            return codec
        preferred = DEFAULT_CODECS.get(ext)
        if preferred is None:
            return ""  # decided from the container once it is open
        for name in _FALLBACKS.get(preferred, (preferred,)):
            if _encoder_available(name):
                return name
        return preferred

    def _first_pix_fmt(self) -> str:
        try:
            formats = av.codec.Codec(self.codec, "w").video_formats or ()
        except Exception:  # noqa: BLE001 - reported when the stream is added
            formats = ()
        names = [f.name for f in formats]
        for preferred in ("yuv420p", "yuvj420p", "rgb24"):
            if preferred in names:
                return preferred
        return names[0] if names else "yuv420p"

    def _encoded_size(self) -> tuple[int, int]:
        """Frame size handed to the encoder (even where the codec needs it)."""
        width, height = self.width, self.height
        if self.codec in _ODD_SIZE_OK or not self.codec:
            return width, height
        try:
            fmt = av.VideoFormat(self.pix_fmt)
            sub_x = fmt.chroma_width(2) < 2
            sub_y = fmt.chroma_height(2) < 2
        except (ValueError, av.FFmpegError):
            sub_x = sub_y = True
        if sub_x and width % 2:
            width += 1
        if sub_y and height % 2:
            height += 1
        return width, height

    def _setup_stream(self, options: dict[str, str] | None) -> None:
        container = self._container
        if not self.codec:
            self.codec = container.default_video_codec
            if not self.codec or self.codec == "none":
                raise VideoWriterError(
                    f"cannot write video '{self.path}': container '{container.format.name}' "
                    "has no default video codec; pass codec="
                )
            self.pix_fmt = _DEFAULT_PIX_FMT.get(self.codec) or self._first_pix_fmt()
            self.encoded_size = self._encoded_size()
            self.padded = self.encoded_size != (self.width, self.height)
        opts = dict(_DEFAULT_OPTIONS.get(self.codec, {}))
        opts.update({str(k): str(v) for k, v in (options or {}).items()})
        try:
            stream = container.add_stream(self.codec, rate=self.fps, options=opts)
        except (av.FFmpegError, ValueError, TypeError) as exc:
            raise VideoWriterError(
                f"cannot write video '{self.path}': encoder '{self.codec}' unavailable ({exc})"
            ) from exc
        self._cfr = container.format.name in _CFR_FORMATS
        self._codec_time_base = 1 / self.fps if self._cfr else self.time_base
        stream.width, stream.height = self.encoded_size
        stream.pix_fmt = self.pix_fmt
        if self.threads:
            # the encoder's own pool: left alone, libx264 starts ~1.5 threads per core in
            # every process that encodes, on cores the model stage needs
            stream.codec_context.thread_count = int(self.threads)
        stream.time_base = self._codec_time_base
        stream.codec_context.time_base = self._codec_time_base
        self._stream = stream
        step = (1 / self.fps) / self._codec_time_base
        self._frame_duration = max(1, round(step))

    @property
    def first_pts(self) -> int | None:
        """The first source pts (AVI: timestamps count from it); pass it to a continuing file."""
        return self._first_pts

    @property
    def last_pts(self) -> int | None:
        """The last encoder pts written; pass it to a continuing file as ``previous_pts``."""
        return self._last_pts

    # -- writing -----------------------------------------------------------------------------

    def _next_pts(self, pts: int | None) -> int:
        """The encoder pts for this frame: the source pts (rescaled for AVI), increasing."""
        if pts is None:
            out = round((self.frame_offset + self.frames_written) / self.fps / self._codec_time_base)
        elif self._cfr:
            if self._first_pts is None:
                self._first_pts = int(pts)
            out = round((int(pts) - self._first_pts) * self.time_base / self._codec_time_base)
        else:
            out = int(pts)
        if self._last_pts is not None and out <= self._last_pts:
            if pts is not None:
                self.pts_fixed += 1
            out = self._last_pts + 1
        self._last_pts = out
        return out

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one H x W x 3 uint8 RGB frame with ``pts`` in the writer's ``time_base``."""
        if self._closed:
            raise VideoWriterError(f"cannot write video '{self.path}': writer is closed")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != (self.height, self.width, 3):
            raise ValueError(
                f"expected a {self.height}x{self.width}x3 uint8 image, "
                f"got {image.shape} {image.dtype}"
            )
        if self.padded:
            pad_w = self.encoded_size[0] - self.width
            pad_h = self.encoded_size[1] - self.height
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self._next_pts(pts)
        frame.time_base = self._codec_time_base
        frame.duration = self._frame_duration
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.FFmpegError, ValueError) as exc:
            raise VideoWriterError(
                f"cannot write video '{self.path}': {getattr(exc, 'strerror', None) or exc}"
            ) from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        except (av.FFmpegError, ValueError) as exc:
            self._abort()
            raise VideoWriterError(
                f"cannot finish video '{self.path}': {getattr(exc, 'strerror', None) or exc}"
            ) from exc
        self._container.close()

    def _abort(self) -> None:
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - already failing; keep the first error
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # keep what was written playable, but let the original error through
            self.close()
        except VideoWriterError:
            pass
