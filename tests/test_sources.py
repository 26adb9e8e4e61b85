"""Frame sources on real media: FFmpeg-encoded videos (PyAV) and image folders (Pillow)."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType
from PIL import Image

from pipeline.errors import SourceError
from pipeline.sources import SOURCE_SCHEMES, open_source, register_source
from pipeline.sources.base import Frame, Source, SourceInfo
from pipeline.sources.image_folder import ImageFolderSource, natural_sort_key
from pipeline.sources.video_file import VideoFileSource
from tests.media import first_encoder, frame_pattern, frame_signature, make_video, video_packets

W, H = 160, 96


def read_all(source: Source) -> list[Frame]:
    with source:
        return list(source.frames())


def check_frames(frames: list[Frame], n: int, width: int = W, height: int = H) -> None:
    """n upright RGB frames, indices 0..n-1, pattern order 0..n-1, pts strictly increasing."""
    assert len(frames) == n
    assert [f.index for f in frames] == list(range(n))
    assert [frame_signature(f.image) for f in frames] == list(range(n))
    pts = [f.pts for f in frames]
    assert all(p is not None for p in pts)
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    for f in frames:
        assert f.image.shape == (height, width, 3)
        assert f.image.dtype == np.uint8
        assert f.image.flags.c_contiguous
        assert f.time_base is not None
        assert f.capture_ns > 0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


# -- video files: codecs, containers, pixel formats ----------------------------------------


def test_h264_bframes_mp4_presentation_order(media: Path) -> None:
    path = make_video(media / "bframes.mp4", 16, W, H, "libx264", fps=25, bframes=2)
    packets = video_packets(path)
    # The file really has B-frames: in decode (file) order the pts are not sorted, and some
    # packets are decoded before they are presented.
    pts = [p for p, _ in packets]
    assert pts != sorted(pts)
    assert any(dts < p for p, dts in packets)
    with av.open(str(path)) as container:
        kinds = {int(frame.pict_type) for frame in container.decode(video=0)}
    assert int(PictureType.B) in kinds

    source = VideoFileSource(path)
    info = source.info()
    assert (info.width, info.height) == (W, H)
    assert info.fps == 25
    assert info.frame_count == 16
    assert info.live is False
    assert info.time_base is not None
    frames = read_all(source)
    check_frames(frames, 16)
    # timestamps are the stream's own: frame i at i/25 s
    assert [f.pts * f.time_base for f in frames] == [Fraction(i, 25) for i in range(16)]
    assert source.decode_errors == 0


CODEC_CASES = [
    # (file name, encoder candidates, pix_fmt, expected decoded pix_fmt prefix)
    ("vp9.webm", ("libvpx-vp9",), "yuv420p", "yuv420p"),
    ("mjpeg.avi", ("mjpeg",), "yuvj420p", "yuvj420p"),
    ("mjpeg422.avi", ("mjpeg",), "yuvj422p", "yuvj422p"),
    ("x265_10bit.mp4", ("libx265",), "yuv420p10le", "yuv420p10"),
    ("x264_10bit.mkv", ("libx264",), "yuv420p10le", "yuv420p10"),
    ("ffv1_gray.mkv", ("ffv1",), "gray", "gray"),
    ("x264rgb.mkv", ("libx264rgb",), "rgb24", "gbrp"),
    ("h264.ts", ("libx264",), "yuv420p", "yuv420p"),
]


@pytest.mark.parametrize(("name", "encoders", "pix_fmt", "decoded_fmt"), CODEC_CASES)
def test_codecs_and_pixel_formats(
    media: Path, name: str, encoders: tuple[str, ...], pix_fmt: str, decoded_fmt: str
) -> None:
    encoder = first_encoder(*encoders)
    if encoder is None:
        pytest.skip(f"no encoder among {encoders} in this PyAV build")
    path = make_video(media / name, 10, W, H, encoder, fps=25, pix_fmt=pix_fmt)
    source = VideoFileSource(path)
    info = source.info()
    assert (info.width, info.height) == (W, H)
    assert info.fps == 25
    assert info.extra["pix_fmt"].startswith(decoded_fmt)
    # MKV/WebM/TS do not store a frame count: it is estimated from the duration.
    assert info.frame_count is not None and abs(info.frame_count - 10) <= 1
    frames = read_all(source)
    check_frames(frames, 10)
    if pix_fmt == "gray":
        img = frames[3].image
        assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
    else:
        # colours survive: the bottom-left marker is blue, the bottom-right one yellow
        r, g, b = frames[0].image[int(H * 0.8), W // 4].astype(int)
        assert b > 100 and r < 60 and g < 60
        r, g, b = frames[0].image[int(H * 0.8), 3 * W // 4].astype(int)
        assert r > 200 and g > 180 and b < 60


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [("odd.webm", "libvpx-vp9", "yuv420p"), ("odd.avi", "mjpeg", "yuvj420p")],
)
def test_odd_size_1279x719(media: Path, name: str, codec: str, pix_fmt: str) -> None:
    path = make_video(media / name, 3, 1279, 719, codec, fps=25, pix_fmt=pix_fmt)
    source = VideoFileSource(path)
    info = source.info()
    assert (info.width, info.height) == (1279, 719)
    check_frames(read_all(source), 3, width=1279, height=719)


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotation_metadata_gives_upright_frames(media: Path, rotate: int) -> None:
    """``rotate`` is clockwise (like the legacy tag): the player turns the stored picture."""
    path = make_video(media / f"rot{rotate}.mp4", 4, W, H, "libx264", fps=25, rotate=rotate)
    with av.open(str(path)) as container:  # the display matrix is really in the file
        first = next(container.decode(video=0))
        assert (first.rotation + rotate) % 360 == 0  # PyAV reports counter-clockwise degrees
    source = VideoFileSource(path)
    info = source.info()
    swapped = rotate in (90, 270)
    expected_w, expected_h = (H, W) if swapped else (W, H)
    assert (info.width, info.height) == (expected_w, expected_h)
    frames = read_all(source)
    assert len(frames) == 4
    for i, f in enumerate(frames):
        assert f.image.shape == (expected_h, expected_w, 3)
        assert f.image.flags.c_contiguous
        # undo the clockwise display rotation: the stored pattern must come back
        assert frame_signature(np.rot90(f.image, k=rotate // 90)) == i
    if rotate == 90:
        # the white framing block (stored top-left) is now at the top right
        assert frames[0].image[2, -2].min() > 200
        assert frames[0].image[2, 2].max() < 200


def test_max_frames_and_reiteration(media: Path) -> None:
    path = make_video(media / "short.mkv", 12, W, H, "libx264", fps=25, bframes=2)
    source = VideoFileSource(path, max_frames=5)
    assert source.info().frame_count == 5
    first = read_all(source)
    assert [frame_signature(f.image) for f in first] == [0, 1, 2, 3, 4]
    # a second pass reopens the file and yields the same frames
    again = list(source.frames())
    assert [f.pts for f in again] == [f.pts for f in first]
    source.close()
    assert read_all(VideoFileSource(path, max_frames=0)) == []


def test_frames_without_pts_get_synthesised_ones(media: Path) -> None:
    # A raw H.264 elementary stream carries no timestamps at all.
    path = make_video(media / "raw.h264", 8, W, H, "libx264", fps=25, bframes=2)
    with av.open(str(path)) as container:
        assert all(f.pts is None for f in container.decode(video=0))
    source = VideoFileSource(path)
    frames = read_all(source)
    check_frames(frames, 8)
    seconds = [float(f.pts * f.time_base) for f in frames]
    assert seconds == pytest.approx([i / 25 for i in range(8)], abs=1e-6)


# -- damaged files -------------------------------------------------------------------------


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "container_options"),
    [
        ("trunc.ts", "libx264", "yuv420p", None),
        ("trunc.mkv", "libx264", "yuv420p", {"cluster_time_limit": "100"}),
        ("trunc.webm", "libvpx-vp9", "yuv420p", None),
        ("trunc.avi", "mjpeg", "yuvj420p", None),
    ],
)
def test_truncated_file_yields_readable_frames(
    media: Path, name: str, codec: str, pix_fmt: str, container_options: dict | None
) -> None:
    options = {"g": "5"} if codec == "libx264" else None
    full = make_video(
        media / f"full_{name}",
        20,
        W,
        H,
        codec,
        fps=25,
        pix_fmt=pix_fmt,
        bframes=2 if codec == "libx264" else None,
        options=options,
        container_options=container_options,
    )
    cut = _truncate(full, media / name, 0.5)
    source = VideoFileSource(cut)
    source.info()
    frames = read_all(source)
    assert 1 <= len(frames) < 20
    assert frame_signature(frames[0].image) == 0
    signatures = [frame_signature(f.image) for f in frames]
    assert signatures == sorted(signatures) and signatures[-1] < 20
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))


def test_bit_flips_do_not_crash(media: Path) -> None:
    full = make_video(
        media / "flip_src.ts", 20, W, H, "libx264", fps=25, bframes=2, options={"g": "5"}
    )
    data = bytearray(full.read_bytes())
    rng = random.Random(7)
    for _ in range(12):
        data[rng.randrange(len(data) // 2, len(data) * 9 // 10)] ^= 0xFF
    damaged = media / "flipped.ts"
    damaged.write_bytes(bytes(data))
    source = VideoFileSource(damaged)
    frames = read_all(source)
    assert len(frames) >= 10  # the undamaged first half at least
    assert [frame_signature(f.image) for f in frames[:8]] == list(range(8))
    assert source.decode_errors >= 0


def test_mp4_without_index_cannot_be_opened(media: Path) -> None:
    # A plain MP4 keeps its index (moov) at the end: the first half is unreadable.
    full = make_video(media / "moov_end.mp4", 10, W, H, "libx264", fps=25)
    cut = _truncate(full, media / "moov_cut.mp4", 0.5)
    with pytest.raises(SourceError, match=r"cannot open video '.*moov_cut\.mp4': "):
        VideoFileSource(cut)


def test_no_decodable_frame_raises(media: Path) -> None:
    full = make_video(media / "zero_src.webm", 10, W, H, "libvpx-vp9", fps=25)
    cut = _truncate(full, media / "zero.webm", 0.2)  # header + a piece of the first frame
    try:
        source = VideoFileSource(cut)
    except SourceError:
        return  # also acceptable: the container itself is unreadable
    with pytest.raises(SourceError, match="no frame could be decoded"):
        read_all(source)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=f"video file not found: {missing}"):
        VideoFileSource(missing)


def test_not_a_video(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(3).randbytes(4096))
    with pytest.raises(SourceError) as err:
        VideoFileSource(garbage)
    msg = str(err.value)
    assert msg.startswith(f"cannot open video '{garbage}': ")
    assert "Invalid data" in msg
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="cannot open video"):
        VideoFileSource(empty)


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(
        SourceError, match=r"no video stream in '.*audio\.wav' \(streams found: audio\)"
    ):
        VideoFileSource(path)


# -- image folders -------------------------------------------------------------------------


def test_natural_sort_key() -> None:
    names = ["img10.png", "img2.png", "IMG1.png", "img1.png", "a.png", "img02.png"]
    assert sorted(names, key=natural_sort_key) == [
        "a.png",
        "IMG1.png",
        "img1.png",
        "img02.png",
        "img2.png",
        "img10.png",
    ]  # equal keys (img02/img2, IMG1/img1) fall back to the plain name: still a total order


def _save_pattern(path: Path, index: int, width: int = W, height: int = H, **save) -> None:
    Image.fromarray(frame_pattern(index, width, height)).save(path, **save)


def test_image_folder_natural_order_and_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):  # written in scrambled order, numbered without zero padding
        _save_pattern(folder / f"img{(i * 5) % 12}.png", (i * 5) % 12)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    source = ImageFolderSource(folder, fps=Fraction(30000, 1001))
    info = source.info()
    assert (info.width, info.height) == (W, H)
    assert info.frame_count == 12
    assert info.fps == Fraction(30000, 1001)
    assert info.time_base == Fraction(1001, 30000)
    frames = read_all(source)
    check_frames(frames, 12)
    assert [f.pts for f in frames] == list(range(12))
    assert [p.name for p in source.files][:3] == ["img0.png", "img1.png", "img2.png"]


def test_image_folder_modes_formats_and_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    base = frame_pattern(0, W, H)
    gray = Image.fromarray(base).convert("L")
    gray.save(folder / "01_gray.png")
    Image.fromarray(base).convert("RGBA").save(folder / "02_rgba.png")
    # 16-bit grayscale PNG: 8-bit values scaled up to 16 bits must come back scaled down
    arr16 = np.asarray(gray).astype(np.uint16) * 257
    Image.fromarray(arr16).save(folder / "03_gray16.png")
    Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "04_pal.bmp")
    Image.fromarray(base).save(folder / "05_q.JPG", quality=95)
    Image.fromarray(base).save(folder / "06_lossless.webp", lossless=True)
    Image.fromarray(base).save(folder / "07.tif")
    _save_pattern(folder / "08_big.png", 0, 200, 120)
    # EXIF orientation 6: the stored picture must be turned 90 degrees clockwise.
    stored = np.ascontiguousarray(np.rot90(base, k=1))  # what a sideways camera stores
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "09_exif.jpg", exif=exif, quality=95)
    exif[0x0112] = 8  # turned 90 degrees counter-clockwise for display
    stored = np.ascontiguousarray(np.rot90(base, k=-1))
    Image.fromarray(stored).save(folder / "10_exif.png", exif=exif)

    source = ImageFolderSource(folder)
    info = source.info()
    assert info.frame_count == 10
    assert (info.width, info.height) == (200, 120)
    frames = read_all(source)
    assert len(frames) == 10
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
        assert f.image.flags.c_contiguous
        assert frame_signature(f.image) == 0
    assert frames[0].image.shape == (H, W, 3)
    assert np.array_equal(frames[2].image, frames[0].image)  # 16-bit scaled down exactly
    assert frames[7].image.shape == (120, 200, 3)
    assert frames[8].image.shape == (H, W, 3)  # upright after EXIF transpose
    assert frames[9].image.shape == (H, W, 3)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="image folder not found"):
        ImageFolderSource(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(SourceError, match=f"no images in folder {empty}"):
        ImageFolderSource(empty)

    bad_header = tmp_path / "bad_header"
    bad_header.mkdir()
    _save_pattern(bad_header / "a1.png", 0)
    (bad_header / "a2.png").write_bytes(b"definitely not a png")
    with pytest.raises(SourceError, match=r"cannot read image .*a2\.png"):
        ImageFolderSource(bad_header).info()

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    _save_pattern(truncated / "b1.png", 0)
    _save_pattern(truncated / "b2.png", 1)
    data = (truncated / "b2.png").read_bytes()
    (truncated / "b2.png").write_bytes(data[: len(data) // 2])
    source = ImageFolderSource(truncated)
    assert source.info().frame_count == 2  # headers are fine
    frames = source.frames()
    assert frame_signature(next(frames).image) == 0
    with pytest.raises(SourceError, match=r"cannot read image .*b2\.png"):
        next(frames)


# -- open_source dispatch ------------------------------------------------------------------


def test_open_source_dispatch(tmp_path: Path, media: Path) -> None:
    video = make_video(media / "dispatch.mkv", 3, W, H, "libx264", fps=25)
    folder = tmp_path / "frames"
    folder.mkdir()
    _save_pattern(folder / "f1.png", 0)

    assert isinstance(open_source(str(folder), fps=10), ImageFolderSource)
    assert isinstance(open_source(f"file://{folder}"), ImageFolderSource)
    src = open_source(str(video), max_frames=2)
    assert isinstance(src, VideoFileSource)
    assert len(read_all(src)) == 2
    assert isinstance(open_source(f"file://{video}"), VideoFileSource)

    with pytest.raises(SourceError, match=f"source not found: {tmp_path / 'nothing.mp4'}"):
        open_source(str(tmp_path / "nothing.mp4"))
    with pytest.raises(SourceError, match="source not found"):
        open_source(f"file://{tmp_path / 'nothing.mp4'}")
    with pytest.raises(SourceError, match=r"unknown option\(s\) bogus for video file source"):
        open_source(str(video), bogus=1)


def test_open_source_unknown_scheme() -> None:
    with pytest.raises(SourceError) as err:
        open_source("foo://x")
    msg = str(err.value)
    assert msg.startswith("unknown source scheme 'foo://' in 'foo://x' (supported: ")
    assert "file://" in msg and "synthetic://" in msg
    with pytest.raises(SourceError, match="unknown source scheme 'webcam:'"):
        open_source("webcam:0")


def test_open_source_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.sources.SOURCE_SCHEMES", dict(SOURCE_SCHEMES))

    class Dummy(Source):
        def __init__(self, uri: str, *, size: int = 4) -> None:
            self.uri = uri
            self.size = size

        def info(self) -> SourceInfo:
            return SourceInfo(width=self.size, height=self.size, live=True)

        def frames(self):
            yield Frame(image=np.zeros((self.size, self.size, 3), np.uint8), index=0)

    register_source("dummy", Dummy)
    src = open_source("dummy://cam/1", size=8)
    assert isinstance(src, Dummy) and src.uri == "dummy://cam/1" and src.size == 8
    register_source("cam", Dummy)  # "cam:N" style, no "//"
    assert isinstance(open_source("cam:3"), Dummy)
    # a lazily imported "module:Name" loader
    register_source("lazy", "tests.test_sources:_lazy_loader")
    lazy = open_source("lazy://x")
    assert type(lazy).__name__ == "_Static" and lazy.uri == "lazy://x"
    register_source("broken", "pipeline.sources.no_such_module:Thing")
    with pytest.raises(SourceError, match="source scheme 'broken' is not available"):
        open_source("broken://x")


def _lazy_loader(uri: str, **options: object) -> Source:
    class _Static(Source):
        def info(self) -> SourceInfo:
            return SourceInfo(width=1, height=1)

        def frames(self):
            return iter(())

    src = _Static()
    src.uri = uri
    return src


def test_open_source_synthetic_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    # the entry as it is before first use (an earlier test may have resolved it already)
    monkeypatch.setattr("pipeline.sources.SOURCE_SCHEMES",
                        {**SOURCE_SCHEMES, "synthetic": "pipeline.sources.synthetic:SyntheticSource"})
    try:
        import pipeline.sources.synthetic as synthetic
    except ImportError:
        with pytest.raises(SourceError, match="source scheme 'synthetic' is not available"):
            open_source("synthetic://scene")
        return
    calls = []

    def fake(uri: str, **options: object) -> Source:
        calls.append((uri, options))
        return _lazy_loader(uri)

    monkeypatch.setattr(synthetic, "SyntheticSource", fake)
    open_source("synthetic://scene?n=3", seed=1)
    assert calls == [("synthetic://scene?n=3", {"seed": 1})]
