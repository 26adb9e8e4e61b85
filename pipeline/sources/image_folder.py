"""A directory of still images played as a lossless frame source.

Images are taken from the top level of the folder only (no recursion), filtered by extension
(case-insensitive: png, jpg, jpeg, bmp, webp, tif, tiff) and played in *natural* order: runs of
digits compare as numbers, so ``img2.png`` comes before ``img10.png``; the rest of the name
compares case-insensitively, with the exact file name as the final tie-breaker so the order is
always total and reproducible.

Every image is decoded with Pillow, turned upright with its EXIF orientation and converted to
8-bit RGB (grayscale, palette, RGBA/LA - alpha dropped -, CMYK and 16-bit images included).
Frames keep their own size; :meth:`ImageFolderSource.info` reports the largest width and height
over the folder, read from the image headers only.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.sources.base import Frame, Source, SourceError, SourceInfo

__all__ = ["ImageFolderSource", "IMAGE_EXTENSIONS", "natural_sort_key", "to_fps"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
)

# EXIF orientations 5..8 contain a quarter turn: width and height swap once applied.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

_DIGITS = re.compile(r"(\d+)")


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders ``img2`` before ``img10`` (numbers compared by value).

    Text parts compare case-insensitively; the original name breaks ties so that two
    different names never compare equal.
    """
    parts: list[tuple[int, int | str]] = []
    for i, piece in enumerate(_DIGITS.split(name)):
        if i % 2:  # a run of digits
            parts.append((0, int(piece)))
        elif piece:
            parts.append((1, piece.casefold()))
    return (tuple(parts), name)


def to_fps(value: Fraction | float | int | str) -> Fraction:
    """Parse a frame rate (``30``, ``29.97``, ``"30000/1001"``, ``Fraction``) to a positive Fraction."""
    try:
        if isinstance(value, Fraction):
            fps = value
        elif isinstance(value, float):
            fps = Fraction(repr(value))
        else:
            fps = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise SourceError(f"invalid frame rate {value!r}: {exc}") from exc
    if fps <= 0:
        raise SourceError(f"invalid frame rate {value!r}: must be > 0")
    return fps


def _header_orientation(img: Image.Image) -> int:
    """EXIF orientation (1..8) known from the header, without decoding the pixels.

    Pillow's ``getexif()`` decodes a whole PNG to look for an eXIf chunk after the image
    data; for PNG only the chunk before the pixels is used here (``exif_transpose`` at
    decode time still sees both).
    """
    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = img.getexif()
    try:
        return int(exif.get(_EXIF_ORIENTATION_TAG, 1))
    except (TypeError, ValueError):
        return 1


def _image_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow image to an H x W x 3 uint8 C-contiguous RGB array."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # High bit depth grayscale: scale to 8 bits instead of Pillow's clipping.
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            gray = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        elif mode == "I":
            top = 65535 if arr.max(initial=0) > 255 else 255
            gray = (np.clip(arr, 0, top).astype(np.float64) * (255.0 / top) + 0.5).astype(np.uint8)
        else:  # "F": floats, [0, 1] when they fit there, else [0, 255]
            scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
            gray = (np.clip(arr * scale, 0, 255) + 0.5).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode != "RGB":
        if mode in ("P", "PA") and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


class ImageFolderSource(Source):
    """Frames from the images of one folder, in natural file-name order.

    Args:
        path: the folder.
        fps: frame rate given to the frames (``pts = index``, ``time_base = 1/fps``) so an
            output video has a rate. Default 30.
        max_frames: stop after this many frames (``None``: all images).

    Raises:
        SourceError: the folder does not exist, holds no images, or an image cannot be read
            (the message names the file).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: Fraction | float | int | str = 30,
        max_frames: int | None = None,
    ) -> None:
        self.uri = str(path)
        self.path = Path(path)
        if not self.path.is_dir():
            if self.path.exists():
                raise SourceError(f"not an image folder: {self.path}")
            raise SourceError(f"image folder not found: {self.path}")
        self.fps = to_fps(fps)
        if max_frames is not None and max_frames < 0:
            raise SourceError(f"max_frames must be >= 0, got {max_frames}")
        self.max_frames = max_frames
        try:
            entries = [
                e
                for e in os.scandir(self.path)
                if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file()
            ]
        except OSError as exc:
            raise SourceError(
                f"cannot list image folder {self.path}: {exc.strerror or exc}"
            ) from exc
        if not entries:
            exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
            raise SourceError(f"no images in folder {self.path} (looked for: {exts})")
        self.files: list[Path] = [
            Path(e.path) for e in sorted(entries, key=lambda e: natural_sort_key(e.name))
        ]
        self._info: SourceInfo | None = None

    def _header_size(self, file: Path) -> tuple[int, int]:
        """Upright (width, height) of one image from its header, without decoding pixels."""
        try:
            with Image.open(file) as img:
                width, height = img.size
                orientation = _header_orientation(img)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise SourceError(f"cannot read image {file}: {exc}") from exc
        if orientation in _SWAPPING_ORIENTATIONS:
            width, height = height, width
        return width, height

    def _selected(self) -> list[Path]:
        return self.files if self.max_frames is None else self.files[: self.max_frames]

    def info(self) -> SourceInfo:
        """Largest upright width/height over the images (headers only), count, fps."""
        if self._info is None:
            files = self._selected()
            sizes = [self._header_size(f) for f in files]
            self._info = SourceInfo(
                width=max((w for w, _ in sizes), default=0),
                height=max((h for _, h in sizes), default=0),
                fps=self.fps,
                frame_count=len(files),
                time_base=1 / self.fps,
                live=False,
                extra={"kind": "image_folder", "folder": str(self.path)},
            )
        return self._info

    def frames(self) -> Iterator[Frame]:
        """Decode the images one by one, in natural order, as upright 8-bit RGB frames."""
        time_base = 1 / self.fps
        for index, file in enumerate(self._selected()):
            try:
                with Image.open(file) as img:
                    img.load()
                    upright = ImageOps.exif_transpose(img)
                    image = _image_to_rgb(upright)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                raise SourceError(f"cannot read image {file}: {exc}") from exc
            yield Frame(
                image=image,
                index=index,
                pts=index,
                time_base=time_base,
                capture_ns=time.time_ns(),
            )
