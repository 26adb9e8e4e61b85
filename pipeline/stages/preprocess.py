"""Preprocess stage: resize + normalise each frame into the slot's model-input region.

On ``--device cuda`` the transform runs inside the infer stage on the GPU instead (frames
are uploaded once there), so this stage passes handles through untouched.
"""

from __future__ import annotations

import torch

from engines.transform import prepare_image, target_size
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

    def loop(self) -> None:
        while True:
            header, buffers = self.recv(self.upstream)
            if header["type"] != "frame":
                if self.relay(header):
                    return
                continue
            if self.is_stale(header):
                continue
            with self.unless_stale():
                self.absorb_inline(header, buffers)
                if self.on_host:
                    with self.busy():
                        frame = self.frame_view(header)
                        shape = (3, *target_size(*frame.shape[:2], self.spec.min_size, self.spec.max_size))
                        # resized straight into the slot's model-input region (no copy)
                        region = torch.from_numpy(self.ring.model_input(header["slot"], shape))
                        prepare_image(frame, self.spec, out=region)
                    header["in_shape"] = list(shape)
                self.forward(self.downstream, header)
