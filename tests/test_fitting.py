import numpy as np
import torch

from cest.render.camera import project
from cest.fitting import fit_viewpoint


def test_fit_viewpoint_recovers_a_known_viewpoint():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(68, 3)).astype(np.float32)
    truth = np.array([0.6, 0.1, -0.5, 0.2, 0.05, -0.1, 0.0], dtype=np.float32)
    pixels = project(torch.from_numpy(points)[None], torch.from_numpy(truth)[None], 200)[0, :, :2].numpy()
    fitted = fit_viewpoint(pixels, points, 200)
    assert np.allclose(fitted, truth, atol=1e-4)
