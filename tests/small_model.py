"""The small model of the tests (SMALL as ModelConfig fields, SMALL_SETS as the training commands' --set arguments),
and a small model trained a few real steps and saved as a user gets it: for tests of what reads checkpoints."""

import json

import torch

from cest.checkpoint import save_checkpoint
from cest.config import Config, ModelConfig
from cest.model import CESTModel
from cest.step import Batch, make_optimizer, train_step

# 64 px, UV 64, narrow networks: a step takes a fraction of a second on one core.
SMALL = dict(image_size=64, uv_size=64, encoder_widths=(8, 16, 16, 32, 32, 32), unet_widths=(8, 16, 16, 32, 32))
# SMALL as the training commands' arguments (jobs/train.py, jobs/ablations.py): --set model.FIELD=VALUE, no spaces
# in a value (`ray job submit` joins its entrypoint's arguments with spaces).
SMALL_SETS = [argument for name, value in SMALL.items()
              for argument in ("--set", f"model.{name}={json.dumps(value, separators=(',', ':'))}")]


def train_small_checkpoint(directory, morphable, frames, variant: str = "cest", steps: int = 3):
    """(checkpoint path, Config): `steps` Adam steps of a SMALL model on the first 8 of `frames` (a FrameSet)."""
    torch.manual_seed(0)
    config = Config(model=ModelConfig(variant=variant, **SMALL))
    model = CESTModel(config.model, morphable)
    optimizer = make_optimizer(model, config.optim)
    batch = Batch(frames.images[:8], frames.masks[:8], frames.landmarks[:8], frames.clip_ids[:8])
    for step in range(steps):
        train_step(model, optimizer, batch, config.loss, torch.Generator().manual_seed(step))
    return save_checkpoint(directory, model, config, step=steps), config
