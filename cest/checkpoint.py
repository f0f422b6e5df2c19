"""Checkpoints: one file that carries a trained model, its configuration and, for resuming, the training state.

`checkpoint.pt` (written by `save_checkpoint`, read with `torch.load(weights_only=True)`) is a dict of plain
types and tensors:
  format          "cest-checkpoint/1"
  config          the resolved `cest.config.Config` as a dict (`config_to_dict`)
  model           the CESTModel state dict (the morphable model is not in it: it is rebuilt from the assets)
  step            training steps done
  optimizer       Adam state dict, or None
  scaler          torch.amp.GradScaler state dict, or None (bf16 and fp32 runs need none)
  rng             {"torch", "cuda", "numpy", "python"} random states, or None
  mlflow_run_id   the MLflow run that trained it, or None
`meta.json` beside it holds {"step": N}, so that the newest checkpoint of a run is found without loading any.
A checkpoint path may name the file, the directory holding it (a Ray Train checkpoint directory), or a training
run directory (STORAGE/NAME of jobs/train.py, holding checkpoint_* directories): then its newest checkpoint.
"""

import json
import random
from pathlib import Path

import numpy as np
import torch

from cest.config import Config, config_from_dict, config_to_dict

FORMAT = "cest-checkpoint/1"
# The project's published CPU-trained model (models/README.md: data, recipe, scores, licences), the default of
# `jobs.reconstruct` when no checkpoint is named.
PUBLISHED_MODEL = Path(__file__).resolve().parents[1] / "models" / "cest_cpu.pt"
FILE_NAME = "checkpoint.pt"
META_NAME = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint path that does not exist or does not hold a CEST checkpoint."""


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file named by `path`: the file itself, a directory holding checkpoint.pt, or a training
    run directory, whose checkpoint of the highest step (by meta.json) is taken."""
    path = Path(path)
    if path.is_dir() and not (path / FILE_NAME).is_file():
        steps = {child: json.loads((child / META_NAME).read_text())["step"] for child in path.iterdir()
                 if (child / FILE_NAME).is_file() and (child / META_NAME).is_file()}
        if steps:
            return max(steps, key=steps.get) / FILE_NAME
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (a checkpoint.pt, its directory, or a training run's directory)")
    return path


def rng_state() -> dict:
    """Every random generator a training loop draws from, in types `torch.load(weights_only=True)` accepts."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    random.setstate(state["python"])


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: Config,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rng: dict | None = None,
    mlflow_run_id: str | None = None,
) -> Path:
    """Write checkpoint.pt into the directory `path` (created); atomic: a reader never sees half a file."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # DistributedDataParallel-style wrappers
    payload = {
        "format": FORMAT,
        "config": config_to_dict(config),
        "model": model.state_dict(),
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng,
        "mlflow_run_id": mlflow_run_id,
    }
    target = directory / FILE_NAME
    partial = directory / (FILE_NAME + ".partial")
    torch.save(payload, partial)
    partial.replace(target)
    (directory / META_NAME).write_text(json.dumps({"step": int(step)}))
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict (see the module doc), with "config" as a `Config`."""
    file = checkpoint_file(path)
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file: one clear message instead of a pickle trace
        raise CheckpointError(f"{file} is not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a CEST checkpoint (format {FORMAT} expected)")
    payload["config"] = config_from_dict(payload["config"])
    return payload


FLOAT16_MAX = 65504.0


def _float16_where_it_fits(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 tensor as float16 when every value is within float16's range; any other tensor as it is."""
    if tensor.dtype != torch.float32 or (tensor.abs() > FLOAT16_MAX).any():
        return tensor
    return tensor.half()


def publish_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Write the model of checkpoint `source` (any path `checkpoint_file` accepts) to the file `target`
    without its training state (optimizer, scaler, random states): what reconstruction and evaluation need.
    It keeps the config, the step and the MLflow run that trained it. float32 weights are stored as float16
    where they fit its range (a sixth of the training checkpoint's size; `load_state_dict` casts them back to
    the model's float32): the published model's scores moved by 0.01 or less (models/README.md)."""
    payload = torch.load(checkpoint_file(source), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a CEST checkpoint (format {FORMAT} expected)")
    payload.update(optimizer=None, scaler=None, rng=None)
    payload["model"] = {name: _float16_where_it_fits(tensor) for name, tensor in payload["model"].items()}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    torch.save(payload, partial)
    partial.replace(target)
    return target


def load_model(path: str | Path, device: str | torch.device = "cpu", morphable=None):
    """(CESTModel in eval mode on `device`, Config, checkpoint dict) from a checkpoint file or directory."""
    from cest.model import build_model  # the model needs the morphable model asset; keep this module light

    payload = load_checkpoint(path, map_location=device)
    config = payload["config"]
    model = build_model(config.model, morphable)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), config, payload
