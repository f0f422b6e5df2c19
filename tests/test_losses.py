import math

import pytest
import torch

from cest.config import LossConfig, ModelConfig
from cest.losses import (
    degeneracy_measures,
    landmark_loss,
    objective,
    photometric_loss,
    pixel_distance,
    reflectance_smoothness,
    reflectance_variants,
    shape_regulariser,
)
from cest.model import CESTModel
from cest.pairing import partner_indices
from cest.render.uv import flip_uv
from small_model import SMALL


def _reference_photometric(target, rendered, mask, distance):
    """Loops over frames and pixels."""
    per_frame = []
    for b in range(target.shape[0]):
        total, count = 0.0, 0.0
        for i in range(target.shape[2]):
            for j in range(target.shape[3]):
                if mask[b, 0, i, j] == 0:
                    continue
                diff = [float(target[b, c, i, j] - rendered[b, c, i, j]) for c in range(3)]
                value = math.sqrt(sum(d * d for d in diff)) if distance == "l21" else sum(abs(d) for d in diff) / 3
                total += value
                count += 1
        per_frame.append(total / max(count, 1))
    return sum(per_frame) / len(per_frame)


@pytest.mark.parametrize("distance", ["l21", "l1"])
def test_photometric_loss_matches_a_loop(distance):
    generator = torch.Generator().manual_seed(0)
    target, rendered = torch.rand(3, 3, 6, 5, generator=generator), torch.rand(3, 3, 6, 5, generator=generator)
    mask = (torch.rand(3, 1, 6, 5, generator=generator) > 0.4).float()
    mask[2] = 0  # an empty mask contributes 0
    expected = _reference_photometric(target, rendered, mask, distance)
    assert photometric_loss(target, rendered, mask, distance).item() == pytest.approx(expected, rel=1e-5)


def test_photometric_loss_ignores_pixels_outside_the_mask():
    target = torch.rand(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    rendered = target.clone()
    rendered[..., :2, :] = 5  # outside the mask
    assert photometric_loss(target, rendered, mask, "l21") < 1e-3
    rendered[..., 3, 3] += 0.5
    assert photometric_loss(target, rendered, mask, "l21") > 1e-3


def test_pixel_distance_l21_has_finite_gradient_at_zero_error():
    target = torch.rand(1, 3, 2, 2)
    rendered = target.clone().requires_grad_()
    pixel_distance(target, rendered, "l21").sum().backward()
    assert torch.isfinite(rendered.grad).all()


def test_landmark_loss_is_mean_distance_over_image_size():
    detected = torch.zeros(2, 68, 2)
    predicted = detected.clone()
    predicted[..., 0] += 3.0
    predicted[..., 1] += 4.0  # every point 5 px off
    assert landmark_loss(predicted, detected, 100).item() == pytest.approx(0.05)
    with pytest.raises(ValueError):
        landmark_loss(predicted[:, :5], detected, 100)


def test_shape_regulariser_is_mean_square():
    assert shape_regulariser(torch.full((2, 63), 2.0), torch.full((2, 6), 2.0)).item() == pytest.approx(4.0)


def test_flip_twice_is_identity_and_symmetric_maps_are_unchanged():
    reflectance = torch.rand(2, 3, 32, 32)
    clip_ids = torch.tensor([0, 0])
    config = LossConfig(symmetry=True, consistency=False)
    flipped = reflectance_variants(reflectance, clip_ids, config)["symmetry"]
    assert not torch.allclose(flipped, reflectance)
    assert torch.equal(reflectance_variants(flipped, clip_ids, config)["symmetry"], reflectance)
    symmetric = (reflectance + flip_uv(reflectance)) / 2
    assert torch.allclose(reflectance_variants(symmetric, clip_ids, config)["symmetry"], symmetric)


def test_consistency_uses_a_partner_of_the_same_clip_or_the_clip_average():
    clip_ids = torch.tensor([3, 3, 8, 8, 8, 3])
    reflectance = torch.arange(6.0)[:, None, None, None].expand(6, 3, 4, 4)  # frame index as value
    paired = reflectance_variants(reflectance, clip_ids, LossConfig(symmetry=False), torch.Generator().manual_seed(0))
    partners = paired["consistency"][:, 0, 0, 0].long()
    assert set(paired) == {"photometric", "consistency"}
    assert torch.equal(paired["photometric"], reflectance)
    assert torch.equal(clip_ids[partners], clip_ids) and (partners != torch.arange(6)).all()
    # Issue 10, fix 5 (App. B.2, FML-style): the clip mean replaces each frame's own reflectance; no extra term.
    averaged = reflectance_variants(reflectance, clip_ids, LossConfig(consistency_mode="clip_average"))
    assert set(averaged) == {"photometric", "symmetry"}
    assert averaged["photometric"][:, 0, 0, 0].tolist() == pytest.approx([2, 2, 3, 3, 3, 2])


@pytest.fixture(scope="module")
def small_model(morphable):
    torch.manual_seed(0)
    return CESTModel(ModelConfig(**SMALL), morphable)


@pytest.mark.parametrize(
    "symmetry, consistency, expected",
    [(True, True, 3), (True, False, 2), (False, True, 2), (False, False, 1)],
)
def test_one_rasterization_and_linear_shading_passes_per_frame(
    small_model, sample_frames, monkeypatch, symmetry, consistency, expected
):
    # Count the real renderer's calls: terms grow linearly with the frames (1 + symmetry + consistency).
    calls = {"rasterize": [], "shade": []}
    renderer = small_model.renderer
    for name in calls:
        real = getattr(renderer, name)
        monkeypatch.setattr(renderer, name, lambda *a, _real=real, _name=name: calls[_name].append(a[0]) or _real(*a))
    frames = sample_frames
    estimate = small_model(frames.images)
    terms = objective(small_model, estimate, frames.images, frames.masks, frames.landmarks, frames.clip_ids,
                      LossConfig(symmetry=symmetry, consistency=consistency))
    assert len(calls["rasterize"]) == 1
    assert len(calls["shade"]) == expected
    assert {"photometric", "landmark", "regulariser", "total"} <= set(terms)
    assert ("symmetry" in terms) == symmetry and ("consistency" in terms) == consistency


def test_clip_average_mode_reconstructs_every_frame_with_its_clip_mean(small_model, sample_frames):
    frames = sample_frames
    config = LossConfig(symmetry=False, consistency_mode="clip_average")
    with torch.no_grad():
        estimate = small_model(frames.images)
        terms = objective(small_model, estimate, frames.images, frames.masks, frames.landmarks, frames.clip_ids,
                          config)
        mean = torch.stack([estimate.reflectance[frames.clip_ids == c].mean(0) for c in frames.clip_ids])
        expected = photometric_loss(frames.images, small_model.render(estimate, mean),
                                    frames.masks * estimate.faces.face_mask, config.distance)
    assert "consistency" not in terms
    assert terms["photometric"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["total"].item() == pytest.approx(
        (terms["photometric"] + config.w_landmark * terms["landmark"]
         + config.w_regulariser * terms["regulariser"]).item(), rel=1e-6)


def test_each_reconstruction_term_renders_the_frame_with_its_own_flipped_or_partner_reflectance(
        small_model, sample_frames):
    """Eq. 6-8 by hand: the terms equal renderings of frame i with its reflectance, that reflectance flipped
    left-right in the mirror-symmetric UV layout, and the reflectance of the partner frame drawn by the same
    generator (a term that rendered another map, flipped the wrong axis or used another mask would differ)."""
    frames = sample_frames
    config = LossConfig()
    with torch.no_grad():
        estimate = small_model(frames.images)
        terms = objective(small_model, estimate, frames.images, frames.masks, frames.landmarks, frames.clip_ids,
                          config, torch.Generator().manual_seed(3))
        partners = partner_indices(frames.clip_ids, torch.Generator().manual_seed(3))
        mask = frames.masks * estimate.faces.face_mask
        reflectances = {"photometric": estimate.reflectance, "symmetry": estimate.reflectance.flip(-1),
                        "consistency": estimate.reflectance[partners]}
        for name, reflectance in reflectances.items():
            expected = photometric_loss(frames.images, small_model.render(estimate, reflectance), mask, config.distance)
            assert terms[name].item() == pytest.approx(expected.item(), rel=1e-6), name
    assert abs(terms["symmetry"].item() - terms["photometric"].item()) > 1e-4  # the maps are not symmetric


def test_total_is_the_weighted_sum(small_model, sample_frames):
    frames = sample_frames
    config = LossConfig(w_landmark=2.5, w_regulariser=0.1)
    with torch.no_grad():
        terms = objective(small_model, small_model(frames.images), frames.images, frames.masks, frames.landmarks,
                          frames.clip_ids, config, torch.Generator().manual_seed(0))
    expected = terms["photometric"] + terms["symmetry"] + terms["consistency"] + 2.5 * terms["landmark"] \
        + 0.1 * terms["regulariser"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def _reference_smoothness(reflectance, texture, valid, edge_scale):
    """Loops over texel pairs to the right and below."""
    total, pairs = 0.0, 0
    _, _, height, width = reflectance.shape
    for b in range(reflectance.shape[0]):
        for i in range(height):
            for j in range(width):
                for k, l in ((i, j + 1), (i + 1, j)):
                    if k >= height or l >= width or not (valid[b, 0, i, j] and valid[b, 0, k, l]):
                        continue
                    texture_step = float((texture[b, :, i, j] - texture[b, :, k, l]).abs().mean())
                    total += math.exp(-texture_step / edge_scale) * float(
                        (reflectance[b, :, i, j] - reflectance[b, :, k, l]).abs().mean())
                    pairs += 1
    return total / pairs


def test_reflectance_smoothness_matches_a_loop():
    generator = torch.Generator().manual_seed(0)
    reflectance, texture = torch.rand(2, 3, 6, 5, generator=generator), torch.rand(2, 3, 6, 5, generator=generator)
    valid = (torch.rand(2, 1, 6, 5, generator=generator) > 0.3).float()
    value = reflectance_smoothness(reflectance, texture, valid, 0.1)
    assert value.item() == pytest.approx(_reference_smoothness(reflectance, texture, valid, 0.1), rel=1e-5)


def test_reflectance_smoothness_prices_baked_shading_not_reflectance_edges():
    """A texture = a skin with a dark brow band under a light ramp. A reflectance that keeps the ramp costs
    far more than the true one, whose brow edges the texture's jumps excuse."""
    size = 32
    ramp = torch.linspace(0.5, 1.0, size).expand(size, size)  # shading: a directional light across the face
    albedo = torch.full((size, size), 0.6)
    albedo[12:15] = 0.15  # a brow
    texture, valid = (albedo * ramp).expand(1, 3, size, size), torch.ones(1, 1, size, size)
    baked = texture / texture.mean()  # reflectance = the texture: all the shading kept (the degenerate solution)
    true = albedo.expand(1, 3, size, size)
    baked_cost, true_cost = (reflectance_smoothness(r, texture, valid, 0.05) for r in (baked, true))
    assert baked_cost > 100 * true_cost
    assert true_cost < 0.01 * (true[..., 1:, :] - true[..., :-1, :]).abs().mean()  # the brow's edges go unpriced
    assert reflectance_smoothness(baked, texture, valid * 0, 0.05) == 0  # nothing seen, nothing priced


def test_reflectance_smoothness_joins_the_total_only_when_weighted(small_model, sample_frames):
    frames = sample_frames
    with torch.no_grad():
        estimate = small_model(frames.images)
        off, on = (objective(small_model, estimate, frames.images, frames.masks, frames.landmarks, frames.clip_ids,
                             LossConfig(w_reflectance_smoothness=w), torch.Generator().manual_seed(0))
                   for w in (0.0, 2.0))
    assert "reflectance_smoothness" not in off and on["reflectance_smoothness"] > 0
    expected = off["total"] + 2.0 * on["reflectance_smoothness"]
    assert on["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_degeneracy_measures_detect_a_copied_texture_under_flat_light(small_model, sample_frames):
    frames = sample_frames
    with torch.no_grad():
        estimate = small_model(frames.images[:4])
    estimate.reflectance = estimate.texture.clone()
    estimate.sh = small_model.ambient_sh.expand(4, -1).clone()
    measures = degeneracy_measures(small_model, estimate, frames.masks[:4])
    assert measures["texture_correlation"] > 0.999
    assert measures["shading_std"] < 1e-4
    estimate.sh[:, 2] = 1.5  # light from the camera side: shading varies over the face
    assert degeneracy_measures(small_model, estimate, frames.masks[:4])["shading_std"] > 0.05


def test_one_prior_prices_expression_and_identity_in_the_same_units(small_model, sample_frames):
    # Issue 10, fix 4: SFM blendshape weights are not standard deviations (a unit moves vertices 2.7-13.9 mm RMS,
    # one identity sd 0.1-4.0 mm). Expression weights that move the face as far as one sd of the leading
    # identity component must cost one sd each.
    morphable = small_model.morphable
    rms = lambda basis: basis.square().sum(-1).mean(-1).sqrt()  # noqa: E731
    one_sd = rms(morphable.identity_basis[:1]) / rms(morphable.expression_basis)
    frames = sample_frames
    with torch.no_grad():
        estimate = small_model(frames.images[:2])
    estimate.alpha_identity = torch.zeros_like(estimate.alpha_identity)
    estimate.alpha_expression = one_sd.expand(2, -1).clone()
    terms = objective(small_model, estimate, frames.images[:2], frames.masks[:2], frames.landmarks[:2],
                      frames.clip_ids[:2], LossConfig(symmetry=False, consistency=False))
    count = morphable.n_identity + morphable.n_expression
    assert terms["regulariser"].item() == pytest.approx(morphable.n_expression / count, rel=1e-5)
    assert 0.2 < one_sd.min() and one_sd.max() < 2  # SFM: 0.29 (surprise) .. 1.53 (sadness)
