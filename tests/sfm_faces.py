"""Known-answer faces for the shape benchmarks' tests: Surrey Face Model identities in millimetres."""

import numpy as np
import torch

from cest.morphable import load_sfm


def random_face_mm(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (N, 3) in mm, triangles (T, 3), landmark vertex indices (68,)) of a random neutral identity."""
    morphable = load_sfm()
    alpha = torch.randn(1, morphable.n_identity, generator=torch.Generator().manual_seed(seed))
    vertices = morphable.shape(alpha.double(), torch.zeros(1, morphable.n_expression)).double()[0].numpy()
    return vertices * morphable.unit_scale_mm, morphable.triangles.numpy(), np.asarray(morphable.landmark_indices)
