"""Local cameras through Video4Linux2, read with PyAV's ``v4l2`` input (not OpenCV).

URIs: ``/dev/videoN``, ``/dev/v4l/by-id/...``, ``camera:N`` / ``camera://N`` (= ``/dev/videoN``)
and ``camera:/dev/...``. Options choose the mode the driver should deliver::

    open_source("camera:0", video_size="640x480", framerate=30, input_format="mjpeg")

``input_format`` is the V4L2 pixel format (``mjpeg``, ``yuyv422``, ``h264``, ...; FFmpeg's
names); unset options leave the driver's current mode. Frames are converted to RGB like every
source. A missing device raises ``SourceError("camera not found: /dev/video3")`` at once
(unless ``wait_for_online=True``); a device that disappears while running (USB unplugged)
is reconnected like a network stream (status events, backoff), see
:mod:`pipeline.sources.live_av`.

Why not OpenCV: the capture process must not load OpenCV's FFmpeg next to PyAV's (two
FFmpeg builds in one process), and PyAV gives timestamps and timeouts.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

import av

from pipeline.sources.base import SourceError
from pipeline.sources.live_av import ConnectError, LiveAVSource
from pipeline.sources.live_options import live_options

__all__ = ["CameraSource", "camera_device", "is_camera_device"]

_DEVICE_PATH = re.compile(r"^/dev/(video\d+|v4l/.+)$")
_CAMERA_URI = re.compile(r"^camera:(//)?(?P<rest>.*)$", re.IGNORECASE)


def is_camera_device(path: str) -> bool:
    """True for V4L2 device paths (``/dev/videoN``, ``/dev/v4l/by-id/...``)."""
    return bool(_DEVICE_PATH.match(str(path)))


def camera_device(uri: str) -> str:
    """The device path a camera URI names (``camera:2`` -> ``/dev/video2``)."""
    uri = str(uri).strip()
    match = _CAMERA_URI.match(uri)
    rest = match.group("rest") if match else uri
    if rest.isdigit():
        return f"/dev/video{int(rest)}"
    if rest == "":
        return "/dev/video0"
    if rest.startswith("/"):
        return rest
    raise SourceError(
        f"cannot read camera URI '{uri}': use camera:N, /dev/videoN or camera:/dev/PATH"
    )


class CameraSource(LiveAVSource):
    """A V4L2 camera.

    Args:
        uri: ``/dev/videoN``, ``camera:N`` or ``camera:/dev/PATH``.
        video_size: ``"WIDTHxHEIGHT"`` or ``(width, height)`` to ask the driver for.
        framerate: frames per second to ask for.
        input_format: V4L2 pixel format to ask for (``mjpeg``, ``yuyv422``, ``h264``, ...).
        av_options: extra options for FFmpeg's v4l2 input (strings).
        wait_for_online: as for :class:`~pipeline.sources.live_av.LiveAVSource`; without it
            a missing device fails at once, before any FFmpeg call.
        thread_count: decoder threads (``0``, the default: FFmpeg's choice).
        reconnect, on_status, stream_id, thread_type: passed on (``live``) to
            :class:`~pipeline.sources.live_av.LiveAVSource`, as documented there (the
            signature shows them: :func:`~pipeline.sources.live_options.live_options`). A camera
            never "ends": its end of stream always counts as an outage.
    """

    kind = "camera"

    @live_options(fixed=["reconnect_on_eof"])
    def __init__(
        self,
        uri: str,
        *,
        video_size: str | tuple[int, int] | None = None,
        framerate: float | str | None = None,
        input_format: str | None = None,
        av_options: dict[str, Any] | None = None,
        wait_for_online: bool = False,
        thread_count: int = 0,
        **live: Any,
    ) -> None:
        self.device = camera_device(uri)
        options: dict[str, str] = {}
        if video_size is not None:
            if isinstance(video_size, (tuple, list)):
                video_size = f"{int(video_size[0])}x{int(video_size[1])}"
            if not re.fullmatch(r"\d+x\d+", str(video_size)):
                raise SourceError(f"camera video_size must be WIDTHxHEIGHT, got {video_size!r}")
            options["video_size"] = str(video_size)
        if framerate is not None:
            options["framerate"] = str(framerate)
        if input_format is not None:
            options["input_format"] = str(input_format)
        options.update({str(k): str(v) for k, v in (av_options or {}).items()})
        self.av_options = options
        if not wait_for_online:
            self._check_device()  # fail fast, before any FFmpeg call
        super().__init__(
            uri,
            wait_for_online=wait_for_online,
            reconnect_on_eof=True,  # a camera never "ends": EOF means it went away
            thread_count=thread_count,
            **live,
        )

    def _device_problem(self) -> str | None:
        try:
            mode = os.stat(self.device).st_mode
        except FileNotFoundError:
            return f"camera not found: {self.device}"
        except OSError as exc:
            return f"camera {self.device}: {exc.strerror or exc}"
        if not stat.S_ISCHR(mode):
            return f"camera {self.device}: not a video device"
        return None

    def _check_device(self) -> None:
        problem = self._device_problem()
        if problem:
            raise SourceError(problem)

    def _open_error(self, reason: str) -> str:
        if reason.startswith("camera "):
            return reason
        return f"cannot open camera '{self.device}': {reason}"

    def _open_container(self) -> Any:
        problem = self._device_problem()
        if problem:
            raise ConnectError(problem)
        return av.open(
            self.device,
            mode="r",
            format="v4l2",
            options=dict(self.av_options),
            timeout=(self.open_timeout_s, self.read_timeout_s),
            metadata_errors="ignore",
        )

    def _extra_info(self) -> dict[str, Any]:
        return {"device": self.device, "av_options": dict(self.av_options)}
