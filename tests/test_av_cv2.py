"""OpenCV and PyAV both bundle FFmpeg libraries. The stage processes keep them apart
(capture/publish use PyAV only, preprocess/postprocess never import PyAV), but the
single-process paths (benchmark baseline, reference) load both. Prove that is safe here:
in either import order, decode -> draw -> encode -> decode round-trips correctly, and
each package resolves its own copy of libavcodec."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import sys
first, second = sys.argv[1], sys.argv[2]
__import__(first); __import__(second)
import av, cv2, numpy as np
sys.path.insert(0, "tests")
from media import make_video, frame_signature
from pipeline.ops.overlay import draw_instances
from pipeline.ops.paste import MaskCrop
from pipeline.sinks.video_writer import VideoWriter

src = make_video(sys.argv[3] + "/in.mp4", 6, 160, 120, "libx264", 25)
with av.open(str(src)) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
assert [frame_signature(f) for f in frames] == list(range(6))
writer = VideoWriter(sys.argv[3] + "/out.mp4", 160, 120, fps=25)
mask = np.zeros((20, 20), bool); mask[5:15, 5:15] = True
for i, f in enumerate(frames):
    f = f.copy()
    draw_instances(f, [MaskCrop(130, 90, mask)], np.array([[130, 90, 150, 110]], np.float32),
                   np.array([1]), np.array([0.9]), ["bg", "thing"])
    cv2.GaussianBlur(f, (3, 3), 0)  # exercise cv2's own codepaths too
    writer.write(f, i)
writer.close()
with av.open(sys.argv[3] + "/out.mp4") as c:
    out = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
assert len(out) == 6
assert [frame_signature(f) for f in out] == list(range(6)), "decode/encode corrupted by the mix"
libs = {line.split()[-1] for line in open("/proc/self/maps") if "libavcodec" in line}
assert len(libs) == 2, libs  # two private copies, no symbol clash
print("ok", sorted(l.split("/")[-3] for l in libs))
"""


@pytest.mark.parametrize("order", [("av", "cv2"), ("cv2", "av")], ids=["av-first", "cv2-first"])
def test_pyav_and_opencv_coexist_in_one_process(tmp_path, order):
    result = subprocess.run([sys.executable, "-c", SCRIPT, *order, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize(
    "stage, extra",
    [
        ("capture", "pipeline.sources.video_file"),
        ("preprocess", ""),
        ("infer", ""),
        ("postprocess", "pipeline.ops.overlay"),
        ("publish", "pipeline.sinks.video_writer"),
    ],
)
def test_no_stage_process_loads_both(stage, extra):
    code = (
        f"import sys, pipeline.stages.{stage}" + (f", {extra}" if extra else "") + ";"
        "print(int('cv2' in sys.modules), int('av' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cv2_loaded, av_loaded = map(int, out.stdout.split())
    assert not (cv2_loaded and av_loaded), f"{stage} loads both OpenCV and PyAV"
