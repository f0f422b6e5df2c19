import math

import numpy as np
import torch

from cest.render.lighting import ambient_sh, sh_basis, shade


def fibonacci_sphere(n: int) -> torch.Tensor:
    """Nearly uniform points on the unit sphere; each stands for an area of 4 pi / n."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z * z)
    return torch.from_numpy(np.stack([r * np.cos(phi), r * np.sin(phi), z], -1))


def test_sh_basis_is_orthonormal_on_the_sphere():
    points = fibonacci_sphere(200_000)
    basis = sh_basis(points)
    gram = basis.T @ basis * (4 * math.pi / len(points))
    assert torch.allclose(gram, torch.eye(9, dtype=gram.dtype), atol=1e-3)


def test_ambient_light_shades_one_everywhere():
    normals = torch.nn.functional.normalize(torch.randn(2, 50, 3), dim=-1)
    shading = shade(normals, ambient_sh(2))
    assert torch.allclose(shading, torch.ones(2, 50, 1), atol=1e-6)


def test_shade_matches_lambertian_integral():
    """Irradiance of a point light seen through SH: E(n)/pi against the clamped cosine max(n.l, 0)."""
    light = torch.tensor([0.3, 0.5, 0.81])
    light = light / light.norm()
    # Project the radiance of a narrow light (a delta at `light`) onto the basis: L_k = Y_k(light).
    coefficients = sh_basis(light)[None]
    normals = fibonacci_sphere(500).float()[None]
    approx = shade(normals, coefficients)[0, :, 0]
    exact = torch.clamp(normals[0] @ light, min=0) / math.pi
    # Three bands capture the clamped cosine to within ~10% of its peak (Ramamoorthi & Hanrahan).
    assert (approx - exact).abs().max() < 0.1 / math.pi * 1.5
