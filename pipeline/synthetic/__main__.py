"""Write a synthetic scene as a video plus ground truth.

    python -m pipeline.synthetic --seed 7 --frames 300 --size 640x480 --fps 30 --out DIR
    python -m pipeline.synthetic --kind tracking --seed 5 --frames 150 --out DIR

--kind default    objects bounce around and live a few seconds (the demo models' training
                  scenes; the default)
--kind tracking   for multi-object tracking: every 6 s act has two objects crossing, one
                  hiding behind a larger one for up to ~1 s, one leaving the frame and
                  coming back, all at varying speed (``pipeline.synthetic.tracking``)
--kind panoptic   for panoptic segmentation: bouncing objects (things) in front of three to
                  five amorphous stuff classes (sky, wall, grass, road, water: class ids
                  7..11, after the shapes) under a panning camera
                  (``pipeline.synthetic.stuff``); also writes the COCO panoptic files

DIR/video.mp4        H.264 (libx264, yuv420p, crf 12, preset veryfast), pts = frame index,
                     time base 1/fps
DIR/instances.json   COCO: images (id = frame index), annotations (RLE masks as str counts,
                     bbox [x, y, w, h], area, iscrowd 0, category_id, track_id: the same
                     object keeps its track_id through occlusions and exits), categories;
                     info has the seed, kind, size and fps
DIR/semantic/NNNNNN.png  uint8 class map per frame (0 = background, else class id)

and for --kind panoptic (``pipeline.synthetic.panoptic``; the semantic PNGs then label the
stuff too, and instances.json's categories list the stuff classes with isthing 0):

DIR/panoptic/NNNNNN.png  RGB segment-id map, id = R + 256 G + 256^2 B (0 = void; a stuff
                     segment's id is its class id, a thing's is 256 + track_id)
DIR/panoptic.json    COCO panoptic: images, annotations (image_id, file_name relative to
                     panoptic/, segments_info: id, category_id, isthing, iscrowd 0, area,
                     bbox [x, y, w, h], track_id for things), categories (with isthing)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline.synthetic.coco import coco_categories, frame_annotations
from pipeline.synthetic.panoptic import PanopticWriter, panoptic_categories
from pipeline.synthetic.scene import CLASS_NAMES, KINDS, SyntheticScene
from pipeline.synthetic.stuff import PANOPTIC_CLASS_NAMES


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT (e.g. 640x480), got {text!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    if w % 2 or h % 2:
        raise argparse.ArgumentTypeError(
            f"H.264 with yuv420p needs an even width and height, got {text!r}"
        )
    if w > 8192 or h > 8192:
        raise argparse.ArgumentTypeError(f"size at most 8192x8192, got {text!r}")
    return w, h


def _fps(text: str) -> Fraction:
    try:
        fps = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a positive number (e.g. 30 or 30000/1001), got {text!r}"
        ) from None
    if fps <= 0 or fps > 1000:
        raise argparse.ArgumentTypeError(f"fps must be in (0, 1000], got {text!r}")
    return fps.limit_denominator(1_000_000)


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive(text: str) -> int:
    v = _non_negative(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def _image_record(
    i: int, width: int, height: int, fps: Fraction, panoptic: bool = False
) -> dict[str, Any]:
    """COCO image entry of frame ``i`` (id = frame index)."""
    record = {
        "id": i,
        "file_name": f"video.mp4#{i}",
        "width": width,
        "height": height,
        "frame_index": i,
        "time_s": float(i / fps),
        "semantic": f"semantic/{i:06d}.png",
    }
    if panoptic:
        record["panoptic"] = f"panoptic/{i:06d}.png"
    return record


def _add_video_stream(container: Any, size: tuple[int, int], fps: Fraction, crf: int, preset: str) -> Any:
    """An H.264 yuv420p stream whose timestamps are frame indices (time base 1/fps)."""
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = 1 / fps
    stream.codec_context.time_base = 1 / fps
    stream.options = {"crf": str(crf), "preset": preset}
    return stream


def _report(done: int, frames: int, t0: float) -> None:
    rate = done / max(1e-9, time.time() - t0)
    print(f"[synthetic] {done}/{frames} frames ({rate:.1f} fps)", file=sys.stderr, flush=True)


def write_scene(
    out: Path,
    seed: int,
    frames: int,
    size: tuple[int, int],
    fps: Fraction,
    crf: int = 12,
    preset: str = "veryfast",
    progress: bool = True,
    kind: str = "default",
) -> dict:
    """Render ``frames`` frames of scene ``(seed, kind)`` and write video, COCO json and
    semantic PNGs into ``out`` (and the COCO panoptic files for ``kind="panoptic"``)."""
    import av
    from PIL import Image

    width, height = size
    sem_dir = out / "semantic"
    sem_dir.mkdir(parents=True, exist_ok=True)
    scene = SyntheticScene(seed, width, height, float(fps), kind=kind)
    panoptic = PanopticWriter(out) if kind == "panoptic" else None
    images, annotations = [], []
    t0 = time.time()
    step = max(1, frames // 10)
    # The MP4 track time scale = fps numerator, so pts = frame index for integer rates
    # (time base 1/fps); for e.g. 30000/1001 the time base is 1/30000 and pts = 1001 * index.
    muxer_options = {"video_track_timescale": str(fps.numerator)}
    with av.open(str(out / "video.mp4"), mode="w", options=muxer_options) as container:
        stream = _add_video_stream(container, size, fps, crf, preset)
        for i in range(frames):
            fr = scene.frame(i)
            vf = av.VideoFrame.from_ndarray(fr.image, format="rgb24")
            vf.pts = i
            vf.time_base = 1 / fps  # encoder time base; the muxer rescales to its track
            for packet in stream.encode(vf):
                container.mux(packet)
            Image.fromarray(fr.class_map, mode="L").save(sem_dir / f"{i:06d}.png")
            if panoptic is not None:
                panoptic.add(fr, i)
            images.append(_image_record(i, width, height, fps, panoptic is not None))
            annotations += frame_annotations(fr, i, first_id=len(annotations) + 1)
            if progress and ((i + 1) % step == 0 or i + 1 == frames):
                _report(i + 1, frames, t0)
        for packet in stream.encode(None):
            container.mux(packet)
    info = _info(seed, kind, frames, size, fps, f"libx264 yuv420p crf {crf} preset {preset}")
    # panoptic scenes list the stuff classes too, so their semantic PNGs can be scored
    categories = coco_categories() if panoptic is None else panoptic_categories()
    coco = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    (out / "instances.json").write_text(json.dumps(coco), encoding="utf-8")
    if panoptic is not None:
        panoptic.finish(info, images)
    return coco


def _info(
    seed: int, kind: str, frames: int, size: tuple[int, int], fps: Fraction, codec: str
) -> dict[str, Any]:
    """The ``info`` of the COCO files of a scene."""
    return {
        "description": "segstream synthetic scene",
        "seed": seed,
        "kind": kind,
        "frames": frames,
        "width": size[0],
        "height": size[1],
        "fps": str(fps),
        "video": "video.mp4",
        "codec": codec,
        "class_names": list(PANOPTIC_CLASS_NAMES if kind == "panoptic" else CLASS_NAMES),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.synthetic",
        description="Render a synthetic scene to DIR/video.mp4 with COCO instances (each with "
        "its track_id) and semantic PNGs.",
        epilog="Kinds: 'default' is the demo models' training scene. 'tracking' is cut into 6 s "
        "acts; every act has two objects on crossing courses, an object that hides entirely "
        "behind a larger one for 0.3 to 1 s and comes out again, and an object that leaves "
        "the frame and comes back in across the same edge, all accelerating, decelerating "
        "and pausing. An object keeps its track_id throughout; a frame has no annotation for "
        "an object entirely hidden or outside it. 'panoptic' adds three to five stuff classes "
        "(ids 7..11) with irregular, drifting boundaries behind the objects; segment ids: a "
        "stuff segment's is its class id, a thing's 256 + track_id. Example: python -m "
        "pipeline.synthetic --kind tracking --seed 5 --frames 150 --out DIR",
    )
    p.add_argument(
        "--seed",
        type=_non_negative,
        default=0,
        help="scene seed (>= 0; 1000..1999 are training seeds)",
    )
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="default",
        help="scene kind: 'default' (bouncing objects, the training scenes; the default), "
        "'tracking' (crossings, occlusions, exits and re-entries, varying speed; see below) or "
        "'panoptic' (objects on amorphous stuff: sky, wall, grass, road, water; also writes "
        "panoptic/*.png and panoptic.json, COCO panoptic)",
    )
    p.add_argument("--frames", type=_positive, default=120, help="number of frames (>= 1)")
    p.add_argument(
        "--size",
        type=_size,
        default=(640, 480),
        help="WIDTHxHEIGHT, even numbers (default 640x480)",
    )
    p.add_argument("--fps", type=_fps, default=Fraction(30), help="frame rate (default 30)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--crf", type=int, default=12, help="x264 quality (lower is better, default 12)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} exists and is not a directory", file=sys.stderr)
        return 2
    try:
        coco = write_scene(
            out,
            args.seed,
            args.frames,
            args.size,
            args.fps,
            args.crf,
            args.preset,
            not args.quiet,
            kind=args.kind,
        )
    except OSError as exc:
        print(f"error: cannot write to {out}: {exc}", file=sys.stderr)
        return 2
    n_ann = len(coco["annotations"])
    extra = ", panoptic.json, panoptic/" if args.kind == "panoptic" else ""
    print(
        f"[synthetic] wrote {out}/video.mp4, instances.json ({n_ann} instances), "
        f"semantic/ ({args.frames} PNGs){extra}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
