"""Preprocess stage: resize + normalise each frame into the slot's model-input region.

On ``--device cuda`` the transform runs inside the infer stage on the GPU instead (frames
are uploaded once there), so this stage passes handles through untouched.
"""

from __future__ import annotations

from engines.transform import prepare_image
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
                        tensor = prepare_image(self.frame_view(header), self.spec)
                        shape = tuple(tensor.shape)
                        self.ring.model_input(header["slot"], shape)[...] = tensor.numpy()
                    header["in_shape"] = list(shape)
                self.forward(self.downstream, header)
