"""Box rescaling, clipping and detection filtering."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import box_iou

from pipeline.ops.boxes import clip_boxes, filter_detections, rescale_boxes


def test_rescale_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand((50, 4), generator=g) * 800
    for src, dst in [((800, 1067), (1080, 1920)), ((520, 520), (719, 1279)), ((10, 10), (10, 10))]:
        got = rescale_boxes(boxes, src, dst)
        assert torch.equal(got, resize_boxes(boxes, list(src), list(dst)))
    # Hand-checked: x scales by width ratio, y by height ratio.
    got = rescale_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (100, 200), (50, 400))
    assert torch.allclose(got, torch.tensor([[20.0, 10.0, 60.0, 20.0]]))
    assert rescale_boxes(torch.zeros((0, 4)), (5, 5), (10, 10)).shape == (0, 4)


def test_clip_boxes() -> None:
    boxes = torch.tensor([[-5.0, -2.0, 30.0, 12.0], [3.0, 4.0, 5.0, 6.0]])
    got = clip_boxes(boxes, (10, 20))
    assert torch.equal(got, torch.tensor([[0.0, 0.0, 20.0, 10.0], [3.0, 4.0, 5.0, 6.0]]))
    assert clip_boxes(torch.zeros((0, 4)), (10, 20)).shape == (0, 4)


def _hand_case() -> tuple[torch.Tensor, ...]:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: class 1, 0.9
            [1.0, 0.0, 11.0, 10.0],  # 1: class 1, 0.8, IoU with 0 = 90/110 = 0.818 -> suppressed
            [1.0, 0.0, 11.0, 10.0],  # 2: class 2, 0.7, same box, other class -> kept
            [0.0, 0.0, 10.0, 20.0],  # 3: class 1, 0.6, IoU with 0 = 100/200 = 0.5 -> kept at 0.7
            [50.0, 50.0, 60.0, 60.0],  # 4: class 1, 0.04 -> below threshold
            [30.0, 30.0, 40.0, 40.0],  # 5: class 3, 0.95
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.04, 0.95])
    labels = torch.tensor([1, 1, 2, 1, 1, 3])
    masks = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 28, 28).clone()
    return boxes, scores, labels, masks


def test_filter_detections_hand_checked() -> None:
    boxes, scores, labels, masks = _hand_case()
    assert box_iou(boxes[0:1], boxes[1:2]).item() == pytest.approx(90 / 110)
    b, s, lab, m = filter_detections(boxes, scores, labels, masks, 0.05, 0.7, 100)
    # Survivors 5, 0, 2, 3 in descending score order; masks travel with their boxes.
    assert torch.equal(s, torch.tensor([0.95, 0.9, 0.7, 0.6]))
    assert torch.equal(lab, torch.tensor([3, 1, 2, 1]))
    assert torch.equal(m[:, 0, 0], torch.tensor([5.0, 0.0, 2.0, 3.0]))
    assert torch.equal(b, boxes[[5, 0, 2, 3]])
    # Tighter IoU: box 3 (IoU 0.5 with box 0) goes too.
    _, s, _, _ = filter_detections(boxes, scores, labels, masks, 0.05, 0.4, 100)
    assert torch.equal(s, torch.tensor([0.95, 0.9, 0.7]))
    # nms_iou >= 1 disables NMS; max_detections keeps the top scores.
    _, s, _, _ = filter_detections(boxes, scores, labels, masks, 0.05, 1.0, 3)
    assert torch.equal(s, torch.tensor([0.95, 0.9, 0.8]))
    # A score equal to the threshold is kept.
    _, s, _, _ = filter_detections(boxes, scores, labels, None, 0.6, 1.0, 100)
    assert torch.equal(s, torch.tensor([0.95, 0.9, 0.8, 0.7, 0.6]))


def test_filter_detections_empty_and_none_masks() -> None:
    boxes, scores, labels, masks = _hand_case()
    b, s, lab, m = filter_detections(boxes, scores, labels, None, 0.99, 0.5, 10)
    assert b.shape == (0, 4) and s.shape == (0,) and lab.shape == (0,) and m is None
    b, s, lab, m = filter_detections(
        torch.zeros((0, 4)),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros((0, 28, 28)),
        0.5,
        0.5,
        10,
    )
    assert b.shape == (0, 4) and m is not None and m.shape == (0, 28, 28)
    _, s, _, _ = filter_detections(boxes, scores, labels, masks, 0.0, 0.5, 0)
    assert s.shape == (0,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_filter_detections_cuda() -> None:
    boxes, scores, labels, masks = _hand_case()
    b, s, lab, m = filter_detections(
        boxes.cuda(), scores.cuda(), labels.cuda(), masks.cuda(), 0.05, 0.7, 100
    )
    assert s.device.type == "cuda"
    assert torch.equal(s.cpu(), torch.tensor([0.95, 0.9, 0.7, 0.6]))
