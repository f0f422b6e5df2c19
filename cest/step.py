"""One training step: estimate, render, objective, backward, Adam update.

`train_step` is what both the single-process loop (cest/train_local.py) and the distributed job call. The
model may be wrapped (e.g. DistributedDataParallel): the forward goes through the wrapper, rendering uses
the wrapped module (the renderer has no parameters). A non-finite loss or gradient raises
`NonFiniteLossError` before the optimiser touches the weights, so a NaN is never trained on.
"""

import math
from dataclasses import dataclass

import torch

from cest.config import LossConfig, OptimConfig
from cest.losses import geometry_objective, objective
from cest.model import CESTModel

LANDMARK_COUNT = 68


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient is NaN or infinite; the weights were not updated."""


@dataclass
class Batch:
    """images (B, 3, H, W) in [0, 1], masks (B, 1, H, W) in {0, 1}, landmarks (B, 68, 2) px, clip_ids (B,)."""

    images: torch.Tensor
    masks: torch.Tensor
    landmarks: torch.Tensor
    clip_ids: torch.Tensor

    def __post_init__(self):
        count = self.images.shape[0]
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(self.images.shape)}")
        if self.masks.shape != (count, 1, *self.images.shape[2:]):
            raise ValueError(f"masks must be {(count, 1, *self.images.shape[2:])}, got {tuple(self.masks.shape)}")
        if self.landmarks.shape != (count, LANDMARK_COUNT, 2):
            raise ValueError(f"landmarks must be {(count, LANDMARK_COUNT, 2)}, got {tuple(self.landmarks.shape)}")
        if self.clip_ids.shape != (count,):
            raise ValueError(f"clip_ids must be ({count},), got {tuple(self.clip_ids.shape)}")

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.images.to(device), self.masks.to(device), self.landmarks.to(device), self.clip_ids.to(device))


def unwrap_model(model: torch.nn.Module) -> CESTModel:
    """The CESTModel inside a DistributedDataParallel-style wrapper (or the model itself)."""
    return getattr(model, "module", model)


# Trained from the first step; the landmark warm-up (LossConfig.landmark_warmup_steps) trains these alone.
GEOMETRY_NETWORKS = ("viewpoint_net", "shape_net")


def make_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Adam with two named parameter groups, so that each can follow its own schedule (`learning_rates`):
    "geometry" (the viewpoint and shape networks) and "appearance" (reflectance and light, and anything else)."""
    core = unwrap_model(model)
    geometry = [parameter for name in GEOMETRY_NETWORKS for parameter in getattr(core, name).parameters()]
    in_geometry = {id(parameter) for parameter in geometry}
    appearance = [parameter for parameter in model.parameters() if id(parameter) not in in_geometry]
    return torch.optim.Adam([{"params": geometry, "name": "geometry"}, {"params": appearance, "name": "appearance"}],
                            lr=config.learning_rate)


def learning_rate_at(config: OptimConfig, step: int, total_steps: int) -> float:
    """The learning rate of step `step` (0-based) of `total_steps` under the config's schedule."""
    if config.schedule == "constant" or total_steps <= 1:
        return config.learning_rate
    progress = min(max(step / (total_steps - 1), 0.0), 1.0)
    final = config.learning_rate * config.final_fraction
    return final + (config.learning_rate - final) * 0.5 * (1 + math.cos(math.pi * progress))


def learning_rates(config: OptimConfig, warmup_steps: int, step: int, total_steps: int) -> dict[str, float]:
    """Each parameter group's rate at `step`. With `config.restart_after_warmup` the appearance networks'
    schedule starts when they start training, at the end of the landmark warm-up (`warmup_steps`)."""
    start = warmup_steps if config.restart_after_warmup else 0
    return {"geometry": learning_rate_at(config, step, total_steps),
            "appearance": learning_rate_at(config, step - start, total_steps - start)}


def set_learning_rates(optimizer: torch.optim.Optimizer, rates: dict[str, float]) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rates[group["name"]]


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# x86 CPU flags for native bf16 arithmetic; without them oneDNN emulates bf16, slower than float32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this machine's CPU computes bf16 natively; None where /proc/cpuinfo cannot tell (not Linux)."""
    try:
        with open(cpuinfo) as file:
            flags = {flag for line in file if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return None
    if not flags:
        return None
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def make_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """The gradient scaler a precision needs: enabled for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def compute_loss(
    model: torch.nn.Module,
    batch: Batch,
    config: LossConfig,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    geometry_only: bool = False,
) -> dict[str, torch.Tensor]:
    """Forward pass and every loss term ("total" included), as float32 tensors with gradients.

    With precision "bf16" or "fp16" the networks run under autocast; the renderer always runs in float32
    (cest.render.renderer.full_precision). `geometry_only`: the landmark warm-up's terms, without rendering."""
    dtype = AUTOCAST_DTYPES.get(precision)
    with torch.autocast(batch.images.device.type, dtype=dtype, enabled=dtype is not None):
        estimate = model(batch.images, geometry_only=geometry_only)
        if geometry_only:
            terms = geometry_objective(unwrap_model(model), estimate, batch.landmarks, batch.images.shape[-1], config)
        else:
            terms = objective(unwrap_model(model), estimate, batch.images, batch.masks, batch.landmarks,
                              batch.clip_ids, config, generator)
    return {name: value.float() for name, value in terms.items()}


def _describe(terms: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in terms.items())


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: LossConfig,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    geometry_only: bool = False,
) -> dict[str, float]:
    """One Adam step on `batch`; returns each loss term as a float. Raises NonFiniteLossError on NaN/inf.

    With an enabled `scaler` (fp16) an overflowing gradient is the scaler's business: it skips the step and
    lowers the scale, as mixed precision training expects; only a non-finite loss raises. `geometry_only`: a
    step of the landmark warm-up (landmark and regulariser terms; the other networks get no gradient)."""
    optimizer.zero_grad(set_to_none=True)
    terms = compute_loss(model, batch, config, generator, precision, geometry_only)
    if not all(torch.isfinite(value) for value in terms.values()):
        raise NonFiniteLossError(f"non-finite loss, step skipped: {_describe(terms)}")
    if scaler is not None and scaler.is_enabled():
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        terms["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        if not torch.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"non-finite gradient (norm {float(grad_norm)}), step skipped: {_describe(terms)}")
        optimizer.step()
    return {name: float(value.detach()) for name, value in terms.items()}
