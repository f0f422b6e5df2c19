from pathlib import Path

import pytest
import yaml

from cest.config import Config, load_config, save_config


def test_overrides_apply_after_the_file_and_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  image_size: 64\ndata:\n  clips_per_batch: 8\n")
    config = load_config(path, ["loss.symmetry=false", "data.clips_per_batch=2", "model.unet_widths=[8, 8, 8, 8, 8]",
                                "train.precision=bf16"])
    assert config.model.image_size == 64 and config.data.clips_per_batch == 2
    assert config.loss.symmetry is False and config.model.unet_widths == (8, 8, 8, 8, 8)
    assert config.train.precision == "bf16" and config.train.steps == Config().train.steps


@pytest.mark.parametrize("assignment, message", [
    ("loss.symmetry", "section.field=value"),
    ("symmetry=false", "section.field=value"),
    ("losses.symmetry=false", "unknown section"),
    ("loss.symetry=false", "unknown fields"),
    ("train.precision=fp8", "precision"),
    ("train.warmup_precision=fp8", "warmup_precision must be null"),
    ("data.consistency_scope=speaker", "consistency_scope"),
])
def test_bad_overrides_name_the_problem(assignment, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [assignment])


def test_single_frames_train_only_without_consistency(tmp_path):
    with pytest.raises(ValueError, match="consistency needs data.frames_per_clip >= 2"):
        load_config(None, ["data.frames_per_clip=1"])
    config = load_config(None, ["data.frames_per_clip=1", "loss.consistency=false"])
    assert config.data.batch_size == config.data.clips_per_batch
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_the_warmup_precision_applies_to_warmup_steps_only():
    mixed = load_config(None, ["train.warmup_precision=bf16"]).train
    assert (mixed.step_precision(warming_up=True), mixed.step_precision(warming_up=False)) == ("bf16", "fp32")
    assert mixed.scaler_precision == "fp32"
    unset = load_config(None, ["train.precision=bf16"]).train
    assert (unset.step_precision(warming_up=True), unset.step_precision(warming_up=False)) == ("bf16", "bf16")
    # fp16 steps anywhere in the run need the gradient scaler, even when the full steps are float32.
    assert load_config(None, ["train.warmup_precision=fp16"]).train.scaler_precision == "fp16"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_every_shipped_config_loads_with_its_values(path):
    """A typo in a shipped config (an unknown field, a bad value) fails here, not minutes into a job."""
    config = load_config(path)
    for section, values in yaml.safe_load(path.read_text()).items():
        for name, value in values.items():
            loaded = getattr(getattr(config, section), name)
            assert (list(loaded) if isinstance(loaded, tuple) else loaded) == value, f"{section}.{name}"
