"""Preprocess stage: resize + normalise each frame into the slot's model-input region.

On ``--device cuda`` the transform runs inside the infer stage on the GPU instead (frames
are uploaded once there), so this stage passes handles through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from engines.transform import prepare_image, target_size
from pipeline.stage_messages import FrameHandle, PreparedFrame
from pipeline.stages.base import Stage
from pipeline.transport import sockets


class PreprocessStage(Stage):
    name = "preprocess"

    def setup(self) -> None:
        hwm = self.config.transport.queue_depth
        self.upstream = sockets.pull(self.ctx, self.plan.endpoints["preprocess_in"], hwm=hwm)
        self.downstream = sockets.push(self.ctx, self.plan.endpoints["infer_in"], hwm=hwm, lossless=True)
        self.spec = self.plan.model_spec()
        self.on_host = self.config.model.device == "cpu"

    def warm_up(self) -> None:
        if self.on_host:
            prepare_image(self.blank_frame(), self.spec)

    def decode_frame(self, header: dict[str, Any], buffers: Sequence[Any]) -> FrameHandle:
        return FrameHandle.from_parts(header, buffers)

    def process(self, message: FrameHandle) -> PreparedFrame:
        """The model input, written into the slot (host path); else the handle as it is."""
        if not self.on_host:
            return PreparedFrame(message)
        frame = self.frame_view(message)
        shape = (3, *target_size(*frame.shape[:2], self.spec.min_size, self.spec.max_size))
        # resized straight into the slot's model-input region (no copy)
        region = torch.from_numpy(self.ring.model_input(message.slot, shape))
        prepare_image(frame, self.spec, out=region)
        return PreparedFrame(message, shape)
