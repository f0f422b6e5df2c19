"""Synthetic faces with known shape, expression, viewpoint, reflectance and light (issue 10's ground truth).

Every face is rendered by the project's own renderer (`cest.render.renderer.Renderer`) from parameters drawn here:
- identity coefficients ~ N(0, 1) truncated at 3 sd; expression in the prior's standard deviations
  (`cest.model.expression_standard_deviations`), one-sided (blendshapes are expressions, not their opposites),
  half of them active per clip, weights at most 1 (a full expression);
- yaw uniform in +-90 degrees, pitch +-30, roll +-20 (head rotation R = Rz(roll) Rx(pitch) Ry(yaw)); scale
  around the pipeline's framing (0.6) and the landmark centroid near the crop centre, as the pipeline's
  landmark-aligned crops place it;
- grey SH light: ambient plus one directional light (a real-world-like prior: the sun or a window from the
  front half-space, above more often than below), `sh_for_light`;
- a procedural UV reflectance per identity (`procedural_reflectance`): skin tone between light and dark, a
  low-frequency variation, redder lips, darker brows, small asymmetric spots;
- backgrounds: blurred noise, two-colour gradients, or patches of real photographs from the asset mirror.

Clips (talking heads): identity, reflectance and background fixed; pose, expression and light move linearly
from a start to an end state over the frames, plus a small jitter. A clip of 1 frame is a single image.

Shapes: images (B, 3, S, S) in [0, 1], masks (B, 1, S, S), landmarks (B, 68, 2) pixels, viewpoints (B, 7),
alpha_identity (B, K_id), alpha_expression (B, K_exp) blendshape weights, sh (B, 9), reflectance (3, U, U).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cest.render.camera import project, rotation_matrix
from cest.render.lighting import sh_basis
from cest.model import expression_standard_deviations
from cest.morphable import MorphableModel
from cest.render.renderer import Renderer


@dataclass(frozen=True)
class SyntheticSpec:
    """The ranges the generator draws from (issue 10), with their reasons."""

    image_size: int = 224  # the pipeline's crop size
    uv_size: int = 128  # the model's reflectance resolution at 224 (cest.config.ModelConfig)
    max_yaw: float = 90.0  # degrees, uniform: profile views are where conditioning should matter most
    max_pitch: float = 30.0
    max_roll: float = 20.0
    identity_truncation: float = 3.0  # sd
    scale: float = 0.6  # the pipeline's framing of the SFM mean face (cest.config.ModelConfig.init_scale)
    scale_jitter: float = 0.05  # relative, uniform
    centre_jitter: float = 0.04  # NDC, normal: the landmark centroid near the crop centre
    clip_yaw_change: float = 30.0  # degrees, uniform +-: how far a talking head turns within one clip
    clip_pitch_change: float = 10.0
    clip_roll_change: float = 8.0
    ambient: tuple[float, float] = (0.45, 0.9)  # shading of the ambient part, uniform
    directional: tuple[float, float] = (0.0, 0.7)  # peak shading of the directional part, uniform


def euler_to_rotvec(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation vectors (B, 3) of R = Rz(roll) Rx(pitch) Ry(yaw), angles in radians (via quaternions)."""
    def quaternion(axis: int, angle: torch.Tensor) -> torch.Tensor:
        q = torch.zeros(*angle.shape, 4, dtype=angle.dtype)
        q[..., 0] = torch.cos(angle / 2)
        q[..., 1 + axis] = torch.sin(angle / 2)
        return q

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w1, v1, w2, v2 = a[..., :1], a[..., 1:], b[..., :1], b[..., 1:]
        return torch.cat([w1 * w2 - (v1 * v2).sum(-1, keepdim=True), w1 * v2 + w2 * v1 + torch.cross(v1, v2, -1)], -1)

    q = product(product(quaternion(2, roll), quaternion(0, pitch)), quaternion(1, yaw))
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
    sin_half = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    return torch.where(sin_half > 1e-12, q[..., 1:] * angle / sin_half.clamp(min=1e-12), torch.zeros_like(q[..., 1:]))


def sh_for_light(ambient: torch.Tensor, strength: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """(B,) ambient shading, (B,) directional peak shading, (B, 3) unit directions -> SH coefficients (B, 9).

    A distant light of radiance pi * strength from `direction` has coefficients pi * strength * Y_k(direction);
    with the Lambertian factors of `cest.render.lighting.shade` it gives shading ~ strength * max(0, n . direction)
    (the 9-term approximation of the clamped cosine); the ambient part is a constant shading `ambient`.
    """
    sh = math.pi * strength[:, None] * sh_basis(direction)
    sh[:, 0] += ambient / sh_basis(direction)[:, 0]
    return sh


def _smooth_noise(generator: torch.Generator, channels: int, size: int, cells: int) -> torch.Tensor:
    """(channels, size, size) noise in about [-1, 1] varying over `cells` cells (bicubic from a coarse grid)."""
    coarse = torch.rand(1, channels, cells, cells, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]


def _distance_to_polyline(points: torch.Tensor, grid: torch.Tensor, closed: bool) -> torch.Tensor:
    """Distance (S, S) from every grid point (S, S, 2) to the polyline through points (P, 2)."""
    ends = torch.roll(points, -1, 0) if closed else points[1:]
    starts = points if closed else points[:-1]
    segment = ends - starts
    offset = grid[..., None, :] - starts
    t = ((offset * segment).sum(-1) / segment.square().sum(-1).clamp(min=1e-12)).clamp(0, 1)
    return (offset - t[..., None] * segment).norm(dim=-1).min(-1).values


def _inside_polygon(points: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(S, S) bool: grid points inside the polygon `points` (P, 2), by the even-odd rule."""
    x, y = grid[..., 0:1], grid[..., 1:2]
    a, b = points, torch.roll(points, -1, 0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    x_cross = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1] + 1e-12)
    return ((crosses & (x < x_cross)).sum(-1) % 2) == 1


def procedural_reflectance(morphable: MorphableModel, uv_size: int, generator: torch.Generator) -> torch.Tensor:
    """A skin reflectance UV map (3, uv_size, uv_size) in [0, 1] for one identity.

    Features are placed through the UV positions of the model's landmark vertices (lips: the outer lip
    contour 48-59; brows: 17-21 and 22-26), so they land where the model's lips and brows are.
    """
    def uniform(low, high):
        return low + (high - low) * float(torch.rand((), generator=generator))

    light, dark = torch.tensor([0.86, 0.66, 0.55]), torch.tensor([0.36, 0.23, 0.16])
    tone = light + (dark - light) * uniform(0, 1)
    tone = tone * (1 + 0.06 * (torch.rand(3, generator=generator) * 2 - 1))  # hue and brightness jitter
    reflectance = tone[:, None, None] * (1 + uniform(0.04, 0.12) * _smooth_noise(generator, 1, uv_size, 5))
    reflectance = reflectance * (1 + 0.03 * _smooth_noise(generator, 3, uv_size, 9))  # blotchy colour

    centres = (torch.arange(uv_size, dtype=torch.float32) + 0.5) / uv_size
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1)  # (S, S, 2) as (u, v)
    landmark_uv = morphable.uv[morphable.landmark_indices].float()

    lips = _inside_polygon(landmark_uv[48:60], grid).float()
    lips = F.avg_pool2d(lips[None, None], 3, 1, 1)[0]  # soft edge
    lip_colour = torch.tensor([0.78, 0.45, 0.45]) * uniform(0.85, 1.1)
    reflectance = reflectance * (1 - lips) + lips * reflectance * lip_colour[:, None, None] / tone.mean() * 0.6

    brow_width = uniform(0.008, 0.016)
    hair = torch.tensor([0.12, 0.09, 0.07]) * uniform(0.6, 2.5)
    for brow in (landmark_uv[17:22], landmark_uv[22:27]):
        mask = torch.exp(-(_distance_to_polyline(brow, grid, closed=False) / brow_width) ** 2)[None]
        reflectance = reflectance * (1 - 0.8 * mask) + 0.8 * mask * hair[:, None, None]

    for _ in range(int(torch.randint(2, 7, (), generator=generator))):  # asymmetric spots (moles, blemishes)
        where = landmark_uv.min(0).values + torch.rand(2, generator=generator) * (
            landmark_uv.max(0).values - landmark_uv.min(0).values)
        radius = uniform(0.004, 0.012)
        spot = torch.exp(-((grid - where).square().sum(-1) / radius**2))[None]
        reflectance = reflectance * (1 - 0.5 * spot)
    return reflectance.clamp(0, 1)


def background_images(count: int, size: int, generator: torch.Generator, photos: list[np.ndarray]) -> torch.Tensor:
    """(count, 3, size, size): blurred noise, a two-colour gradient, or a patch of one of `photos` (RGB uint8)."""
    out = []
    for _ in range(count):
        kind = int(torch.randint(0, 3 if photos else 2, (), generator=generator))
        if kind == 0:
            cells = int(torch.randint(4, 40, (), generator=generator))
            image = (_smooth_noise(generator, 3, size, cells) * 0.5 + 0.5).clamp(0, 1)
        elif kind == 1:
            a, b = torch.rand(3, generator=generator), torch.rand(3, generator=generator)
            angle = float(torch.rand((), generator=generator)) * 2 * math.pi
            coords = torch.linspace(-1, 1, size)
            ramp = (math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]) * 0.5 + 0.5
            image = a[:, None, None] * (1 - ramp) + b[:, None, None] * ramp
        else:
            photo = photos[int(torch.randint(0, len(photos), (), generator=generator))]
            side = int(min(photo.shape[:2]) * (0.3 + 0.7 * float(torch.rand((), generator=generator))))
            top = int(torch.randint(0, photo.shape[0] - side + 1, (), generator=generator))
            left = int(torch.randint(0, photo.shape[1] - side + 1, (), generator=generator))
            patch = torch.from_numpy(np.ascontiguousarray(photo[top:top + side, left:left + side])).permute(2, 0, 1)
            image = F.interpolate(patch[None].float() / 255, size=(size, size), mode="bilinear",
                                  align_corners=False, antialias=True)[0]
        out.append(image)
    return torch.stack(out)


def load_background_photos() -> list[np.ndarray]:
    """The real photographs of the asset mirror (AFLW2000 sample and the 68-landmark images), RGB uint8."""
    import cv2

    from cest import assets

    names = [n for n in assets.names_under("aflw2000_sample") + assets.names_under("landmarks68")
             if n.endswith((".jpg", ".png"))]
    return [cv2.cvtColor(cv2.imread(str(assets.fetch(name))), cv2.COLOR_BGR2RGB) for name in names]


@dataclass
class SyntheticClip:
    images: torch.Tensor  # (T, 3, S, S) in [0, 1]
    masks: torch.Tensor  # (T, 1, S, S) rendered face mask
    landmarks: torch.Tensor  # (T, 68, 2) projected model landmarks, pixels
    viewpoint: torch.Tensor  # (T, 7)
    yaw_pitch_roll: torch.Tensor  # (T, 3) degrees
    alpha_identity: torch.Tensor  # (T, K_id), the same in every frame
    alpha_expression: torch.Tensor  # (T, K_exp) blendshape weights
    sh: torch.Tensor  # (T, 9)
    reflectance: torch.Tensor  # (3, U, U)


class SyntheticFaces:
    """Draws and renders synthetic clips; every draw comes from the `torch.Generator` it is given."""

    def __init__(self, morphable: MorphableModel, spec: SyntheticSpec = SyntheticSpec(),
                 photos: list[np.ndarray] | None = None):
        self.morphable = morphable
        self.spec = spec
        self.renderer = Renderer.for_model(morphable, spec.image_size, spec.uv_size)
        self.expression_sd = expression_standard_deviations(morphable)
        self.photos = photos or []

    def _uniform(self, generator, count, low, high) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator)

    def _track(self, generator, frames: int, limit: float, change: float) -> torch.Tensor:
        """(frames,) degrees: a linear move from a uniform start by up to +-change, kept within +-limit."""
        start = self._uniform(generator, 1, -limit, limit)
        end = (start + self._uniform(generator, 1, -change, change)).clamp(-limit, limit)
        ramp = torch.linspace(0, 1, frames) if frames > 1 else torch.zeros(1)
        return start + (end - start) * ramp + self._uniform(generator, frames, -1, 1)  # 1 degree of jitter

    def _expressions(self, generator, frames: int) -> torch.Tensor:
        """(frames, K_exp) blendshape weights: active blendshapes move between two intensities."""
        count = self.morphable.n_expression
        active = torch.rand(count, generator=generator) < 0.5
        start, end = (0.6 * torch.randn(2, count, generator=generator).abs() * active).unbind(0)
        ramp = torch.linspace(0, 1, frames)[:, None] if frames > 1 else torch.zeros(1, 1)
        in_sd = start + (end - start) * ramp
        return (in_sd * self.expression_sd).clamp(0, 1)

    def _lights(self, generator, frames: int) -> torch.Tensor:
        spec = self.spec
        ambient = self._uniform(generator, 1, *spec.ambient).expand(frames)
        strength = self._uniform(generator, 1, *spec.directional).expand(frames)
        # Front half-space, above more often than below: azimuth +-80, elevation -30..60 degrees at the start.
        azimuth = self._track(generator, frames, 80, 20) * math.pi / 180
        elevation = (self._uniform(generator, 1, -30, 60) + torch.zeros(frames)) * math.pi / 180
        direction = torch.stack([torch.sin(azimuth) * torch.cos(elevation), torch.sin(elevation),
                                 torch.cos(azimuth) * torch.cos(elevation)], -1)
        return sh_for_light(ambient, strength, direction)

    def clip(self, frames: int, generator: torch.Generator) -> SyntheticClip:
        """One clip of `frames` frames (1: a single image)."""
        spec, morphable = self.spec, self.morphable
        identity = torch.empty(1, morphable.n_identity)
        torch.nn.init.trunc_normal_(identity, 0, 1, -spec.identity_truncation, spec.identity_truncation,
                                    generator=generator)
        identity = identity.expand(frames, -1)
        expression = self._expressions(generator, frames)
        angles = torch.stack([self._track(generator, frames, spec.max_yaw, spec.clip_yaw_change),
                              self._track(generator, frames, spec.max_pitch, spec.clip_pitch_change),
                              self._track(generator, frames, spec.max_roll, spec.clip_roll_change)], -1)
        angles = angles.clamp(torch.tensor([-spec.max_yaw, -spec.max_pitch, -spec.max_roll]),
                              torch.tensor([spec.max_yaw, spec.max_pitch, spec.max_roll]))
        rotvec = euler_to_rotvec(*(angles * math.pi / 180).unbind(-1))
        vertices = morphable.shape(identity, expression)
        scale = spec.scale * (1 + self._uniform(generator, frames, -spec.scale_jitter, spec.scale_jitter))
        landmarks_3d = vertices[:, morphable.landmark_indices]
        centroid = scale[:, None] * (landmarks_3d @ rotation_matrix(rotvec).transpose(-1, -2))[..., :2].mean(1)
        shift = torch.randn(1, 2, generator=generator) * spec.centre_jitter  # the clip's framing
        translation = torch.cat([shift - centroid, torch.zeros(frames, 1)], -1)
        viewpoint = torch.cat([scale[:, None], rotvec, translation], -1)

        reflectance = procedural_reflectance(morphable, spec.uv_size, generator)
        sh = self._lights(generator, frames)
        rendered, mask = self.renderer.render(vertices, viewpoint, reflectance.expand(frames, -1, -1, -1), sh)
        background = background_images(1, spec.image_size, generator, self.photos)
        images = (rendered * mask + background * (1 - mask)).clamp(0, 1)
        landmarks = project(vertices, viewpoint, spec.image_size)[:, morphable.landmark_indices, :2]
        return SyntheticClip(images, mask, landmarks, viewpoint, angles, identity.clone(), expression, sh,
                             reflectance)
