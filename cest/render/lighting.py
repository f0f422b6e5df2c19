"""Lambertian shading under distant, grey illumination with 9 spherical-harmonics coefficients (3 bands).

`sh_basis` is the real orthonormal SH basis Y_k(n) on the unit sphere. For a Lambertian surface the
irradiance is E(n) = sum_k A_l(k) L_k Y_k(n) with A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4 (Ramamoorthi and
Hanrahan 2001), and the reflected radiance is albedo * E / pi. `shade` returns E / pi, so coefficients
L = (1 / Y_0, 0, ..., 0) give shading 1 everywhere: see `ambient_sh`.
"""

import math

import torch

SH_SIZE = 9

_Y0 = 0.5 * math.sqrt(1 / math.pi)
_Y1 = math.sqrt(3 / (4 * math.pi))
_Y2_PRODUCT = 0.5 * math.sqrt(15 / math.pi)
_Y2_ZONAL = 0.25 * math.sqrt(5 / math.pi)
_Y2_DIFF = 0.25 * math.sqrt(15 / math.pi)

# A_l / pi for the band of each coefficient.
LAMBERTIAN_FACTORS = (1.0, 2 / 3, 2 / 3, 2 / 3, 0.25, 0.25, 0.25, 0.25, 0.25)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Real SH basis of bands 0-2 at unit directions (..., 3) -> (..., 9)."""
    x, y, z = normals.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, _Y0),
            _Y1 * y,
            _Y1 * z,
            _Y1 * x,
            _Y2_PRODUCT * x * y,
            _Y2_PRODUCT * y * z,
            _Y2_ZONAL * (3 * z * z - 1),
            _Y2_PRODUCT * x * z,
            _Y2_DIFF * (x * x - y * y),
        ],
        -1,
    )


def shade(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Lambertian shading E(n) / pi for normals (B, ..., 3) and coefficients (B, 9) -> (B, ..., 1)."""
    if sh.shape[-1] != SH_SIZE:
        raise ValueError(f"expected {SH_SIZE} SH coefficients, got shape {tuple(sh.shape)}")
    factors = sh.new_tensor(LAMBERTIAN_FACTORS)
    weights = (sh * factors).reshape(sh.shape[0], *([1] * (normals.dim() - 2)), SH_SIZE)
    return (sh_basis(normals) * weights).sum(-1, keepdim=True)


def ambient_sh(batch_size: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Coefficients of uniform light with shading exactly 1 (the usual initialisation)."""
    sh = torch.zeros(batch_size, SH_SIZE, dtype=dtype, device=device)
    sh[:, 0] = 1 / _Y0
    return sh


def directional_sh(direction, strength: float = 0.8) -> torch.Tensor:
    """Ambient light plus a first-band light from `direction` (unit vector, model/camera frame)."""
    sh = ambient_sh(1) * (1 - strength / 2)
    x, y, z = direction
    sh[0, 1:4] = strength * 2.0 * torch.tensor([y, z, x])
    return sh
