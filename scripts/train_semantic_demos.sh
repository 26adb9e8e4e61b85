#!/usr/bin/env bash
# Train the semantic demo models of the panoptic scenes, the FCN paper's way: FCN-32s from the
# small ResNet of fcn_demo, FCN-16s from FCN-32s, FCN-8s from FCN-16s; then the U-Net from
# scratch. Each run writes engines/weights/<model>.pt (resumable: a killed run continues from
# its .state file) and its model card. About 1.5 hours on a 2-core CPU; THREADS (default 2)
# sets torch's thread count, FCN32_STEPS / SKIP_STEPS / UNET_STEPS the schedules. Logs go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
W=engines/weights
train() { python -m pipeline.training --seed 0 --threads "$THREADS" --log-every 100 \
    --checkpoint-every 100 --resume "$@"; }
train --model fcn32s_demo --out "$W/fcn32s_demo.pt" --init-from "$W/fcn_demo.pt" --steps "${FCN32_STEPS:-1200}"
train --model fcn16s_demo --out "$W/fcn16s_demo.pt" --init-from "$W/fcn32s_demo.pt" --steps "${SKIP_STEPS:-500}"
train --model fcn8s_demo --out "$W/fcn8s_demo.pt" --init-from "$W/fcn16s_demo.pt" --steps "${SKIP_STEPS:-500}"
if [ "${UNET_STEPS:-800}" != 0 ]; then
    train --model unet_demo --out "$W/unet_demo.pt" --steps "${UNET_STEPS:-800}"
fi
