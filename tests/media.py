"""Helpers that make real, FFmpeg-encoded test media (via PyAV) and read frame indices back.

Every frame drawn by :func:`frame_pattern` carries its index as large black/white blocks that
survive lossy compression, chroma subsampling, 10-bit and grayscale round trips:

* top 40 % of the rows: 10 equal columns. Column 0 is always white and column 9 always black
  (framing); columns 1..8 hold the index in binary, most significant bit first
  (white = 1).
* middle 20 %: a bar that moves with the index (gives the encoder real motion; ignored).
* bottom 40 %: left half dark blue, right half yellow (orientation marker: a picture turned
  by 90 or 180 degrees fails the check).

:func:`frame_signature` recovers the index from luma only, or raises ``ValueError`` when the
framing or the orientation marker is not where it should be.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "frame_pattern",
    "frame_signature",
    "make_video",
    "video_packets",
    "has_encoder",
    "first_encoder",
    "MAX_INDEX",
]

N_BITS = 8
MAX_INDEX = (1 << N_BITS) - 1
_COLUMNS = N_BITS + 2
_DARK = (0, 0, 160)
_BRIGHT = (255, 230, 0)


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """An H x W x 3 uint8 RGB picture that encodes ``index`` (0..255) robustly."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index {index} out of range 0..{MAX_INDEX}")
    if width < 40 or height < 30:
        raise ValueError("pattern needs at least 40x30 pixels")
    img = np.zeros((height, width, 3), dtype=np.uint8)
    top = int(height * 0.4)
    bottom = int(height * 0.6)
    bits = [1] + [(index >> (N_BITS - 1 - b)) & 1 for b in range(N_BITS)] + [0]
    for col, bit in enumerate(bits):
        x0 = col * width // _COLUMNS
        x1 = (col + 1) * width // _COLUMNS
        img[:top, x0:x1] = 255 if bit else 0
    # moving bar in the middle band
    img[top:bottom] = 96
    bar_w = max(4, width // 12)
    x = (index * max(1, width // 16)) % max(1, width - bar_w)
    img[top:bottom, x : x + bar_w] = (200, 40, 40)
    # orientation marker
    img[bottom:, : width // 2] = _DARK
    img[bottom:, width // 2 :] = _BRIGHT
    return img


def _luma(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    rgb = image[..., :3].astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _region_mean(luma: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> float:
    """Mean of the central half of a region (edges blur under compression)."""
    dy = (y1 - y0) // 4
    dx = (x1 - x0) // 4
    return float(luma[y0 + dy : y1 - dy, x0 + dx : x1 - dx].mean())


def frame_signature(image: np.ndarray) -> int:
    """Recover the index drawn by :func:`frame_pattern` from a decoded frame.

    Accepts RGB (H x W x 3) or gray (H x W) arrays. Raises ``ValueError`` when the frame does
    not look like an upright pattern frame (wrong orientation, garbage).
    """
    luma = _luma(image)
    height, width = luma.shape
    top = int(height * 0.4)
    bottom = int(height * 0.6)
    means = [
        _region_mean(luma, 0, top, c * width // _COLUMNS, (c + 1) * width // _COLUMNS)
        for c in range(_COLUMNS)
    ]
    if means[0] < 170 or means[-1] > 85:
        raise ValueError(f"framing blocks not found (white={means[0]:.0f}, black={means[-1]:.0f})")
    left = _region_mean(luma, bottom, height, 0, width // 2)
    right = _region_mean(luma, bottom, height, width // 2, width)
    if not (left < 80 and right > 150):
        raise ValueError(f"orientation marker not found (left={left:.0f}, right={right:.0f})")
    value = 0
    for m in means[1:-1]:
        if 85 <= m <= 170:
            raise ValueError(f"ambiguous bit block (mean {m:.0f})")
        value = (value << 1) | int(m > 127)
    return value


def has_encoder(name: str) -> bool:
    """Whether this PyAV build can encode with codec ``name``."""
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False
    return True


def first_encoder(*names: str) -> str | None:
    """The first of ``names`` this PyAV build can encode with, or ``None``."""
    for name in names:
        if has_encoder(name):
            return name
    return None


_FAST_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast", "crf": "20"},
    "libx265": {"preset": "ultrafast", "crf": "22", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "1M"},
}


def make_video(
    path: str | Path,
    n_frames: int,
    width: int,
    height: int,
    codec: str = "libx264",
    fps: Fraction | int = 25,
    pix_fmt: str = "yuv420p",
    *,
    bframes: int | None = None,
    rotate: int | None = None,
    time_base: Fraction | None = None,
    start_pts: int = 0,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``n_frames`` pattern frames into ``path`` with PyAV and return the path.

    Args:
        path: output file; the container comes from the extension.
        codec, pix_fmt: encoder and its pixel format (e.g. ``libx264``/``yuv420p``,
            ``ffv1``/``gray``, ``libx265``/``yuv420p10le``).
        fps: frame rate; frames get ``pts = start_pts + i * (1/fps) / time_base``.
        bframes: for libx264, force this many consecutive B-frames (``b-adapt=0``), so
            presentation order differs from decode order.
        rotate: display rotation in degrees clockwise (as the old ``rotate`` tag: 90 means a
            player turns the stored picture a quarter turn clockwise). Written as a display
            matrix; MP4/MOV only.
        time_base: encoder time base (default ``1/fps``).
        options: extra encoder options; container_options: muxer options.
    """
    path = Path(path)
    fps = Fraction(fps)
    tb = Fraction(time_base) if time_base is not None else 1 / fps
    step = (1 / fps) / tb
    if step.denominator != 1:
        raise ValueError("1/fps must be a whole number of time_base units")
    opts = dict(_FAST_OPTIONS.get(codec, {}))
    if bframes is not None and codec == "libx264":
        opts["x264-params"] = f"bframes={bframes}:b-adapt=0:b-pyramid=none:scenecut=0"
        opts["bf"] = str(bframes)
    opts.update(options or {})
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=opts)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        stream.time_base = tb
        stream.codec_context.time_base = tb
        rotation_written = False
        if rotate and hasattr(stream, "set_display_rotation"):
            stream.set_display_rotation(-rotate)  # PyAV takes counter-clockwise degrees
            rotation_written = True
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            frame.pts = start_pts + i * int(step)
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    if rotate and not rotation_written:
        _patch_mp4_rotation(path, rotate)
    return path


def _display_matrix(rotate_cw: int) -> tuple[int, ...]:
    """ISO/IEC 14496-12 3x3 matrix (16.16 / 2.30 fixed point) for a clockwise rotation."""
    one = 1 << 16
    table = {
        0: (one, 0, 0, one),
        90: (0, one, -one, 0),
        180: (-one, 0, 0, -one),
        270: (0, -one, one, 0),
    }
    a, b, c, d = table[rotate_cw % 360]
    return (a, b, 0, c, d, 0, 0, 0, 1 << 30)


def _patch_mp4_rotation(path: Path, rotate_cw: int) -> None:
    """Write a rotation matrix into the (single) video track's ``tkhd`` box of an MP4/MOV."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"tkhd")
    if pos < 4:
        raise ValueError(f"no tkhd box in {path}")
    version = data[pos + 4]
    # after type: version/flags(4), times+track id+reserved+duration (20 or 32), reserved(8),
    # layer/alt group/volume/reserved (8), then the matrix.
    matrix_at = pos + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    struct.pack_into(">9i", data, matrix_at, *_display_matrix(rotate_cw))
    path.write_bytes(bytes(data))


def video_packets(path: str | Path) -> list[tuple[int | None, int | None]]:
    """(pts, dts) of every packet of the first video stream, in file (decode) order."""
    out = []
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size:
                out.append((packet.pts, packet.dts))
    return out
