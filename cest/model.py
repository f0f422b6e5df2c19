"""The CEST model: four estimators chained by conditioning (paper Sec. 3.2), or independent (IEST).

CEST (Eq. 3-4):  V = f_v(I);  S = f_s(I_c) with I_c the canonical-view crop of I under V;  project S with V
and unwrap I into the UV illuminated texture T with its validity mask M (texels the camera sees);
R = f_r([T, M]);  L = f_l(I, T, R), the three at the UV resolution and stacked as channels. Gradients flow
through the crop, the projection and the unwrapping. Unseen texels of T are 0; M tells f_r which zeros are
missing data rather than black skin, so it can fill them from the seen side (symmetry) instead of copying 0.
IEST, the fair ablation: the same four networks, each on the image alone at the resolution its CEST
counterpart sees: V = f_v(I), S = f_s(I), R = f_r(I at the UV size) through the U-Net's layers without its
skips (the image is not aligned with the UV map, so additive skips would add unrelated positions), and
L = f_l(I at the UV size). T is still unwrapped, for diagnostics only.

Raw network outputs are turned into estimates with offsets that start training at a sensible face: scale =
init_scale * exp(out), rotation vector and translation = out, SH = ambient light (shading 1) + out,
shape coefficients = out in units of the prior's standard deviations (expression: see
`expression_standard_deviations`), reflectance = (tanh + 1) / 2 in [0, 1].
"""

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from cest.render.camera import VIEWPOINT_SIZE, canonical_crop, project
from cest.config import ModelConfig
from cest.render.lighting import SH_SIZE, ambient_sh
from cest.morphable import MorphableModel, load_sfm
from cest.networks import Encoder, ReflectanceUNet, ResidualEncoder
from cest.render.renderer import RasterizedFaces, Renderer


@dataclass
class Geometry:
    """Viewpoint and shape: all the landmark term needs (no rasterization)."""

    viewpoint: torch.Tensor  # (B, 7) scale, rotation vector, translation
    alpha_identity: torch.Tensor  # (B, K_id)
    alpha_expression: torch.Tensor  # (B, K_exp) blendshape weights (divide by expression_sd for sd units)
    vertices: torch.Tensor  # (B, N, 3) model space
    landmarks: torch.Tensor  # (B, 68, 2) projected model landmarks, pixels


@dataclass
class Estimate(Geometry):
    faces: RasterizedFaces  # the projected, rasterized mesh (reused by every rendering of this batch)
    texture: torch.Tensor  # (B, 3, S, S) illuminated texture T unwrapped from the image
    texture_valid: torch.Tensor  # (B, 1, S, S) texels seen in the image
    reflectance: torch.Tensor  # (B, 3, S, S) in [0, 1]
    sh: torch.Tensor  # (B, 9)


def expression_standard_deviations(morphable: MorphableModel) -> torch.Tensor:
    """(K_exp,) blendshape weight that counts as one standard deviation of the shape prior, per blendshape.

    Identity coefficients are in standard deviations (one sd of the leading component moves the vertices by
    4.0 mm RMS on the SFM, later ones 0.1-3 mm); blendshape weights are not (one unit moves them 2.7-13.9 mm
    RMS: a full expression). One expression sd is the weight whose RMS vertex displacement equals that of one
    sd of the leading identity component (SFM: 0.29 surprise .. 1.53 sadness), so one regulariser prices a
    unit of either the same.
    """
    def rms(basis: torch.Tensor) -> torch.Tensor:
        return basis.square().sum(-1).mean(-1).sqrt()

    return rms(morphable.identity_basis[:1]) / rms(morphable.expression_basis)


def _centred(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] images and maps -> [-1, 1] network inputs."""
    return image * 2 - 1


class CESTModel(nn.Module):
    def __init__(self, config: ModelConfig, morphable: MorphableModel):
        super().__init__()
        self.config = config
        self.morphable = morphable
        self.renderer = Renderer.for_model(morphable, config.image_size, config.uv_size, config.raster_backend)
        widths, std = config.encoder_widths, config.head_init_std
        n_shape = morphable.n_identity + morphable.n_expression
        self.viewpoint_net = Encoder(3, VIEWPOINT_SIZE, widths, std)
        self.shape_net = ResidualEncoder(3, n_shape, widths, std)
        # CEST: illuminated texture and its validity mask; IEST: the image, without the (misaligned) skips.
        self.reflectance_net = ReflectanceUNet(4 if self.conditional else 3, 3, config.unet_widths,
                                               skips=self.conditional)
        # CEST lights from image, illuminated texture and reflectance stacked; IEST from the image alone.
        self.illumination_net = Encoder(9 if self.conditional else 3, SH_SIZE, widths, std)
        self.register_buffer("ambient_sh", ambient_sh(1)[0], persistent=False)
        self.register_buffer("expression_sd", expression_standard_deviations(morphable), persistent=False)

    @property
    def conditional(self) -> bool:
        return self.config.variant == "cest"

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise ValueError(f"expected images (B, 3, {size}, {size}), got {tuple(images.shape)}")

    def predict_viewpoint(self, images: torch.Tensor) -> torch.Tensor:
        out = self.viewpoint_net(_centred(images))
        scale = self.config.init_scale * torch.exp(out[:, :1])
        return torch.cat([scale, out[:, 1:]], 1)

    def forward(self, images: torch.Tensor, viewpoint: torch.Tensor | None = None,
                geometry_only: bool = False) -> Estimate | Geometry:
        """Estimates for images (B, 3, H, W) in [0, 1]; `viewpoint` replaces f_v's prediction when given.
        With `geometry_only` just the viewpoint and shape (a `Geometry`): no rendering, reflectance or light."""
        self._check_images(images)
        if viewpoint is None:
            viewpoint = self.predict_viewpoint(images)
        uv_size = self.config.uv_size

        if self.conditional:
            shape_input = canonical_crop(images, viewpoint, images.shape[-1], canonical_scale=self.config.init_scale)
        else:
            shape_input = images
        alpha = self.shape_net(_centred(shape_input))
        alpha_identity, expression_in_sd = alpha.split([self.morphable.n_identity, self.morphable.n_expression], 1)
        alpha_expression = expression_in_sd * self.expression_sd
        vertices = self.morphable.shape(alpha_identity, alpha_expression)
        if geometry_only:
            with torch.autocast(images.device.type, enabled=False):  # pixel positions in float32, as the renderer's
                landmarks = project(vertices[:, self.morphable.landmark_indices].float(), viewpoint.float(),
                                    images.shape[-1])[..., :2]
            return Geometry(viewpoint, alpha_identity, alpha_expression, vertices, landmarks)
        faces = self.renderer.rasterize(vertices, viewpoint)
        texture, valid = self.renderer.unwrap(images, faces)

        small_images = F.interpolate(images, size=(uv_size, uv_size), mode="bilinear", align_corners=False,
                                     antialias=True)
        if self.conditional:
            reflectance = (self.reflectance_net(torch.cat([_centred(texture), valid], 1)) + 1) / 2
            light_input = torch.cat([small_images, texture, reflectance], 1)
        else:
            reflectance = (self.reflectance_net(_centred(small_images)) + 1) / 2
            light_input = small_images
        sh = self.ambient_sh + self.illumination_net(_centred(light_input))

        landmarks = faces.pixels[:, self.morphable.landmark_indices, :2]
        return Estimate(viewpoint=viewpoint, alpha_identity=alpha_identity, alpha_expression=alpha_expression,
                        vertices=vertices, landmarks=landmarks, faces=faces, texture=texture, texture_valid=valid,
                        reflectance=reflectance, sh=sh)

    def render(self, estimate: Estimate, reflectance: torch.Tensor | None = None) -> torch.Tensor:
        """Re-render the estimated faces (B, 3, H, W), with another reflectance map (B, 3, S, S) if given."""
        reflectance = estimate.reflectance if reflectance is None else reflectance
        return self.renderer.shade(estimate.faces, reflectance, estimate.sh)


def build_model(config: ModelConfig, morphable: MorphableModel | None = None) -> CESTModel:
    """The model on the Surrey Face Model (loaded from the asset registry unless given)."""
    return CESTModel(config, morphable if morphable is not None else load_sfm())
