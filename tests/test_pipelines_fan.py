"""FAN backend plumbing. face-alignment downloads FAN weights into the torch hub cache on first use;
this machine is offline, so the test writes a RANDOMLY INITIALISED FAN state dict under the expected
cache file name in a temporary TORCH_HOME. That checks the plumbing only (the weights are found and
loaded, boxes go in and 68 points per face come out through the tracker and the crop stage), not
landmark accuracy. Face boxes come from face-alignment's 'dlib' detector module (HOG on CPU, no download)."""

import dataclasses
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from pipelines.config import PreprocessConfig
from pipelines.inputs import make_input
from pipelines.masks import make_masker
from pipelines.stages import process_input
from sample_assets import sample_clip


@pytest.fixture
def random_fan_cache(tmp_path, monkeypatch):
    from face_alignment.api import models_urls
    from face_alignment.models import FAN

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    state = FAN(4).state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / os.path.basename(urlparse(models_urls["2DFAN-4"]).path))
    return state


@pytest.fixture
def one_torch_thread():
    """One torch thread for the FAN tests, restored afterwards: the tests after them keep the suite's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fan_backend_loads_cached_weights_and_runs_the_stages(random_fan_cache, one_torch_thread):
    from pipelines.landmarks import FanLandmarker

    fan = FanLandmarker(device="cpu", face_detector="dlib")
    loaded = fan._model.face_alignment_net.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in random_fan_cache.items())

    cfg = PreprocessConfig(detector="fan", device="cpu", fan_face_detector="dlib", max_frames=8)
    image = np.zeros((224, 224, 3), np.uint8)
    points = fan.landmarks(image, np.array([[50.0, 40.0, 170.0, 180.0]], np.float32))
    assert points.shape == (1, 68, 2) and np.isfinite(points).all()

    item = make_input(str(sample_clip("id10002/pcavs00086")))
    rows = process_input(item, cfg, fan, make_masker("skin", cfg.skin_threshold))
    # Random weights give arbitrary points, so the clip may be accepted or rejected by a later check;
    # either way the input ends as rows, and never as an internal error.
    assert rows and all(row.get("reason") != "error" for row in rows), rows[0].get("error")
    for row in rows:
        if row["row_kind"] == "clip":
            assert len(row["landmarks"]) == row["num_frames"] * 136 and row["landmark_backend"] == "fan"


def test_fan_config_is_validated():
    with pytest.raises(ValueError, match="device"):
        dataclasses.replace(PreprocessConfig(), device="tpu")


def test_batched_fan_matches_face_alignment_per_image(random_fan_cache, one_torch_thread):
    """landmarks_many (one network run over many crops) against the library's per-image call."""
    import decord

    from pipelines.landmarks import FanLandmarker

    fan = FanLandmarker(device="cpu", face_detector="dlib", batch_size=3)
    frames = decord.VideoReader(str(sample_clip("id10014/vretalk1"))).get_batch([0, 5, 10, 15]).asnumpy()
    boxes = np.array([[200.0, 150.0, 480.0, 470.0], [210, 140, 470, 460], [190, 160, 500, 480], [205, 150, 475, 465]])
    batched = fan.landmarks_many(list(frames), boxes)
    single = np.stack([fan.landmarks(frame, box[None])[0] for frame, box in zip(frames, boxes)])
    assert batched.shape == (4, 68, 2)
    assert batched == pytest.approx(single, abs=1e-3)


def test_one_opencv_build_is_declared_the_one_face_alignment_requires():
    """With both opencv-python and opencv-python-headless installed, each overwrites the other's cv2."""
    import importlib.metadata
    import re
    import tomllib

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=;\[ ]", requirement)[0].lower() for requirement in declared["dependencies"]}
    required_by_fan = {
        re.split(r"[<>=;\[ ]", requirement)[0].lower() for requirement in importlib.metadata.requires("face_alignment")
    }
    opencv = {name for name in names if name.startswith("opencv")}
    assert opencv == {name for name in required_by_fan if name.startswith("opencv")} == {"opencv-python"}
