import math

import torch

from cest.render.lighting import ambient_sh
from cest.morphable import load_sfm
from cest.render.renderer import Renderer
from cest.render.uv import UVMapper, flip_uv, pixels_to_grid


def sfm_mapper(size=64):
    model = load_sfm()
    return model, UVMapper(model.uv, model.triangles, size)


def test_flip_twice_is_identity_and_symmetric_maps_are_unchanged():
    uv_map = torch.rand(2, 3, 16, 16)
    assert torch.equal(flip_uv(flip_uv(uv_map)), uv_map)
    symmetric = uv_map + uv_map.flip(-1)
    assert torch.equal(flip_uv(symmetric), symmetric)


def test_flip_mirrors_the_face_through_the_vertex_mirror_pairs():
    """Wrapping a flipped map gives each vertex its mirror vertex's value (SFM layout is symmetric)."""
    model, mapper = sfm_mapper(128)
    u, v = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="xy")
    uv_map = torch.stack([u, v, u * v])[None]
    per_vertex = mapper.wrap(flip_uv(uv_map))[0]
    mirrored = mapper.wrap(uv_map)[0][model.mirror_indices]
    assert (per_vertex - mirrored).abs().max() < 1e-4


def test_uv_rasterization_reproduces_each_texel_centre():
    """Interpolating the vertices' own UVs with a texel's barycentrics lands on the texel's centre."""
    model, mapper = sfm_mapper(64)
    positions = mapper.texel_positions(model.uv[None])[0]
    centres = (torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="xy"), -1) + 0.5) / 64
    covered = mapper.covered
    assert covered.float().mean() > 0.3
    assert torch.allclose(positions[covered], centres[covered], atol=1e-5)
    assert torch.allclose(mapper.texel_barycentrics[covered].sum(-1), torch.ones(int(covered.sum())))


def test_wrap_samples_a_linear_map_exactly():
    model, mapper = sfm_mapper(64)
    u, v = torch.meshgrid((torch.arange(64.0) + 0.5) / 64, (torch.arange(64.0) + 0.5) / 64, indexing="xy")
    uv_map = torch.stack([u, v])[None]
    inner = ((model.uv > 1 / 64) & (model.uv < 1 - 1 / 64)).all(-1)
    assert torch.allclose(mapper.wrap(uv_map)[0][inner], model.uv[inner], atol=1e-5)


def test_render_then_unwrap_recovers_the_texture():
    """Round trip: a smooth texture rendered under constant shading, unwrapped, equals itself.

    Error bound: two bilinear resamplings of a smooth texture at 224 px (face ~170 px wide) against
    128 x 128 texels; on valid texels we measured a mean absolute error of 0.0004 and a 99th percentile
    of 0.0055 (colour range [0, 1]), asserted below at mean < 0.003 and 99th percentile < 0.02.
    """
    model = load_sfm()
    renderer = Renderer.for_model(model, image_size=224, uv_size=128)
    u, v = torch.meshgrid((torch.arange(128.0) + 0.5) / 128, (torch.arange(128.0) + 0.5) / 128, indexing="xy")
    texture = torch.stack([0.5 + 0.4 * torch.sin(6 * u), 0.5 + 0.4 * torch.cos(5 * v), 0.3 + 0.5 * u * v])[None]
    errors = []
    for yaw in (-0.5, 0.0, 0.6):
        viewpoint = torch.tensor([[0.75, 0.1, yaw, 0.05, 0.0, 0.0, 0.0]])
        faces = renderer.rasterize(model.mean_shape[None], viewpoint)
        image = renderer.shade(faces, texture, ambient_sh(1))
        unwrapped, valid = renderer.unwrap(image, faces)
        errors.append((unwrapped - texture).abs().amax(1)[valid[:, 0] > 0])
        assert valid.mean() > 0.4
    errors = torch.cat(errors)
    assert errors.mean() < 0.003
    assert torch.quantile(errors, 0.99) < 0.02


def test_unwrap_ignores_self_occluded_triangles():
    """At a strong yaw the far cheek's texels are invalid, the near cheek's valid."""
    model = load_sfm()
    renderer = Renderer.for_model(model, image_size=128, uv_size=64)
    viewpoint = torch.tensor([[0.7, 0.0, math.radians(70), 0.0, 0.0, 0.0, 0.0]])
    faces = renderer.rasterize(model.mean_shape[None], viewpoint)
    _, valid = renderer.unwrap(torch.rand(1, 3, 128, 128), faces)
    left, right = valid[0, 0, :, :32].mean(), valid[0, 0, :, 32:].mean()
    # Yaw +70 deg turns the model's +x side (image right, the high-u half of the layout) away.
    assert right < 0.25 * left


def test_unwrap_is_differentiable_in_image_and_vertices():
    model = load_sfm()
    renderer = Renderer.for_model(model, image_size=64, uv_size=32)
    vertices = model.mean_shape[None].clone().requires_grad_()
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    faces = renderer.rasterize(vertices, torch.tensor([[0.75, 0, 0.2, 0, 0, 0, 0]]))
    texture, _ = renderer.unwrap(image, faces)
    texture.sum().backward()
    assert image.grad.abs().sum() > 0 and vertices.grad.abs().sum() > 0


def _valid_and_on_face(model, image_size: int, viewpoint: torch.Tensor, uv_size: int = 64):
    """The unwrap's validity (S, S) at one image size, and which texels' bilinear taps all land on the face."""
    renderer = Renderer.for_model(model, image_size=image_size, uv_size=uv_size)
    faces = renderer.rasterize(model.mean_shape[None], viewpoint)
    _, valid = renderer.unwrap(torch.rand(1, 3, image_size, image_size), faces)
    coverage = (faces.fragments.triangle_id >= 0)[:, None].float()
    taps = torch.nn.functional.grid_sample(coverage, pixels_to_grid(
        renderer.uv_mapper.texel_positions(faces.pixels)[..., :2], image_size), align_corners=False)
    return valid[0, 0] > 0, taps[0, 0] > 1 - 1e-6


def test_unwrap_at_64_px_has_no_dropouts_where_a_fine_rendering_sees_the_face():
    """The illuminated texture at 64 px sees what a 512 px rendering sees, away from the silhouette.

    Reference: the same face unwrapped at 512 px, eroded by one texel. A texel of that region whose image taps
    lie on the face at 64 px must be valid there. Measured (mean face, frontal / yaw 45): 10 / 6 texels of
    2,792 / 1,886 missed; with the z-buffer read at the nearest pixel centre and a tolerance of 0.01 of the
    image (before issue 18) 230 / 66 did, scattered over cheeks and forehead as black dots. Texels hidden at
    512 px stay hidden: 1 / 4 valid at 64 px, before and after."""
    model = load_sfm()
    for yaw in (0.0, 45.0):
        viewpoint = torch.tensor([[0.6, 0.0, math.radians(yaw), 0.0, 0.0, 0.0, 0.0]])
        reference, _ = _valid_and_on_face(model, 512, viewpoint)
        seen = -torch.nn.functional.max_pool2d(-reference[None, None].float(), 3, 1, 1)[0, 0] > 0
        valid, on_face = _valid_and_on_face(model, 64, viewpoint)
        missed = seen & on_face & ~valid
        assert missed.sum() <= 0.01 * seen.sum(), (yaw, int(missed.sum()), int(seen.sum()))
        assert (valid & ~reference).sum() <= 0.005 * seen.sum()
