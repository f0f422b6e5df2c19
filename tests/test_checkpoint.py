import random

import numpy as np
import pytest
import torch

from cest.checkpoint import (CheckpointError, load_checkpoint, load_model, rng_state, save_checkpoint,
                             set_rng_state)
from cest.config import Config, ModelConfig
from cest.model import CESTModel
from cest.step import make_optimizer
from small_model import SMALL


def test_checkpoint_round_trip_restores_weights_config_optimizer_and_rng(tmp_path, morphable):
    config = Config(model=ModelConfig(variant="iest", **SMALL))
    torch.manual_seed(0)
    model = CESTModel(config.model, morphable)
    optimizer = make_optimizer(model, config.optim)
    model(torch.rand(2, 3, 64, 64)).reflectance.mean().backward()
    optimizer.step()
    state = rng_state()
    save_checkpoint(tmp_path, model, config, step=7, optimizer=optimizer, rng=state, mlflow_run_id="abc")
    expected = (torch.rand(3), np.random.rand(3), random.random())

    loaded, loaded_config, payload = load_model(tmp_path, morphable=morphable)
    assert loaded_config == config and loaded_config.model.variant == "iest"
    assert payload["step"] == 7 and payload["mlflow_run_id"] == "abc"
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    restored = make_optimizer(loaded, config.optim)
    restored.load_state_dict(payload["optimizer"])
    states = restored.state_dict()["state"]
    assert states and all(float(s["step"]) == 1 for s in states.values())
    assert torch.equal(states[min(states)]["exp_avg"], optimizer.state_dict()["state"][min(states)]["exp_avg"])
    set_rng_state(payload["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_missing_and_foreign_checkpoints_are_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a CEST checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_a_training_run_directory_names_its_highest_step_checkpoint(tmp_path, morphable):
    """`--checkpoint runs/NAME` (the README's reconstruct command) loads the run's newest checkpoint, chosen by
    step, not by name or order."""
    config = Config(model=ModelConfig(**SMALL))
    torch.manual_seed(0)
    model = CESTModel(config.model, morphable)
    for name, step in [("checkpoint_b", 4), ("checkpoint_a", 12), ("checkpoint_c", 8)]:
        save_checkpoint(tmp_path / "run" / name, model, config, step=step)
    (tmp_path / "run" / "run.json").write_text("{}")  # the job's other files are ignored
    assert load_checkpoint(tmp_path / "run")["step"] == 12
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="training run's directory"):
        load_checkpoint(tmp_path / "empty_run")


def test_a_published_checkpoint_keeps_the_model_and_drops_the_training_state(tmp_path, morphable):
    from cest.checkpoint import publish_checkpoint

    config = Config(model=ModelConfig(**SMALL))
    torch.manual_seed(0)
    model = CESTModel(config.model, morphable)
    optimizer = make_optimizer(model, config.optim)
    model(torch.rand(2, 3, 64, 64)).reflectance.mean().backward()
    optimizer.step()
    source = save_checkpoint(tmp_path / "run" / "checkpoint_00000005", model, config, step=5, optimizer=optimizer,
                             rng=rng_state(), mlflow_run_id="abc")
    target = publish_checkpoint(tmp_path / "run", tmp_path / "models" / "published.pt")
    # Adam keeps two moments per weight (a third of the size without them), and float16 halves the rest.
    assert target.stat().st_size < 0.2 * source.stat().st_size
    loaded, loaded_config, payload = load_model(target, morphable=morphable)
    assert loaded_config == config and payload["step"] == 5 and payload["mlflow_run_id"] == "abc"
    assert payload["optimizer"] is None and payload["rng"] is None
    assert all(parameter.dtype == torch.float32 for parameter in loaded.parameters())  # inference runs in float32
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        published, trained = loaded(images), model.eval()(images)
    # float16 keeps 11 significant bits: the estimates move by about 1e-3 of their size, not more.
    for name in ("viewpoint", "alpha_identity", "reflectance"):
        ours, theirs = getattr(published, name), getattr(trained, name)
        assert not torch.equal(ours, theirs) and torch.allclose(ours, theirs, rtol=0, atol=3e-3 * theirs.abs().max()), name
    with pytest.raises(CheckpointError, match="no checkpoint"):
        publish_checkpoint(tmp_path / "nowhere", tmp_path / "x.pt")
