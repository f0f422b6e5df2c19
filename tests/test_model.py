import pytest
import torch

from cest.config import ModelConfig
from cest.losses import objective
from cest.model import CESTModel
from small_model import SMALL


NETWORKS = ("viewpoint_net", "shape_net", "reflectance_net", "illumination_net")


def small_model(morphable, variant: str) -> CESTModel:
    torch.manual_seed(0)
    return CESTModel(ModelConfig(variant=variant, **SMALL), morphable)


@pytest.mark.parametrize("variant", ["cest", "iest"])
def test_estimate_shapes_and_ranges(morphable, sample_frames, variant):
    model = small_model(morphable, variant)
    estimate = model(sample_frames.images[:4])
    assert estimate.viewpoint.shape == (4, 7)
    assert estimate.alpha_identity.shape == (4, morphable.n_identity)
    assert estimate.alpha_expression.shape == (4, morphable.n_expression)
    assert estimate.vertices.shape == (4, morphable.n_vertices, 3)
    assert estimate.texture.shape == estimate.reflectance.shape == (4, 3, 64, 64)
    assert estimate.sh.shape == (4, 9)
    assert estimate.landmarks.shape == (4, 68, 2)
    assert 0 <= estimate.reflectance.min() and estimate.reflectance.max() <= 1
    # Small heads: training starts near the mean face, frontal, at the canonical scale, under ambient light.
    assert torch.allclose(estimate.viewpoint[:, 0], torch.full((4,), model.config.init_scale), rtol=0.05)
    assert estimate.viewpoint[:, 1:].abs().max() < 0.05
    assert torch.allclose(estimate.sh, model.ambient_sh.expand(4, -1), atol=0.05)
    assert model.render(estimate).shape == (4, 3, 64, 64)


def test_rejects_images_of_the_wrong_size(morphable):
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        small_model(morphable, "cest")(torch.rand(2, 3, 96, 96))


def _reflectance_net_io(model: CESTModel, images: torch.Tensor, viewpoint: torch.Tensor):
    captured = {}
    hook = model.reflectance_net.register_forward_hook(lambda m, args, out: captured.update(input=args[0], output=out))
    try:
        with torch.no_grad():
            model(images, viewpoint)
    finally:
        hook.remove()
    return captured["input"], captured["output"]


@pytest.mark.parametrize("variant", ["cest", "iest"])
def test_viewpoint_conditions_the_reflectance_only_in_cest(morphable, sample_frames, variant):
    model = small_model(morphable, variant).eval()
    images = sample_frames.images[:2]
    with torch.no_grad():
        viewpoint = model.predict_viewpoint(images)
    turned = viewpoint.clone()
    turned[:, 2] += 0.3  # yaw by 0.3 rad
    turned[:, 4] += 0.05  # and shift right
    input_a, output_a = _reflectance_net_io(model, images, viewpoint)
    input_b, output_b = _reflectance_net_io(model, images, turned)
    if variant == "cest":
        assert (input_a - input_b).abs().mean() > 0.05
        assert (output_a - output_b).abs().mean() > 1e-3
    else:
        assert torch.equal(input_a, input_b)
        assert torch.equal(output_a, output_b)


@pytest.mark.parametrize("variant", ["cest", "iest"])
def test_conditioning_chain_in_the_gradients(morphable, sample_frames, variant):
    # In CEST the reflectance depends on the viewpoint and shape networks, the light on the reflectance
    # network; in IEST none of these paths exists.
    model = small_model(morphable, variant)
    estimate = model(sample_frames.images[:4])
    reflectance_grads = torch.autograd.grad(
        estimate.reflectance.sum(), [*model.viewpoint_net.parameters(), *model.shape_net.parameters()],
        allow_unused=True, retain_graph=True,
    )
    light_grads = torch.autograd.grad(estimate.sh.sum(), list(model.reflectance_net.parameters()), allow_unused=True)
    depends = [any(g is not None and g.abs().sum() > 0 for g in grads) for grads in (reflectance_grads, light_grads)]
    assert depends == ([True, True] if variant == "cest" else [False, False])


@pytest.mark.parametrize("variant", ["cest", "iest"])
def test_gradients_reach_all_four_networks(morphable, sample_frames, variant):
    from cest.config import LossConfig

    model = small_model(morphable, variant)
    frames = sample_frames
    index = torch.arange(8)
    estimate = model(frames.images[index])
    terms = objective(model, estimate, frames.images[index], frames.masks[index], frames.landmarks[index],
                      frames.clip_ids[index], LossConfig(), torch.Generator().manual_seed(0))
    terms["total"].backward()
    for name in NETWORKS:
        for parameter_name, parameter in getattr(model, name).named_parameters():
            assert parameter.grad is not None, f"{name}.{parameter_name} got no gradient"
            assert torch.isfinite(parameter.grad).all()
            assert parameter.grad.abs().sum() > 0, f"{name}.{parameter_name} has a zero gradient"


@pytest.mark.parametrize("variant", ["cest", "iest"])
def test_works_at_112_pixels(morphable, sample_frames, variant):
    torch.manual_seed(0)
    model = CESTModel(ModelConfig(variant=variant, **(SMALL | dict(image_size=112))), morphable)
    images = torch.nn.functional.interpolate(sample_frames.images[:2], size=(112, 112), mode="bilinear")
    estimate = model(images)
    assert estimate.reflectance.shape == (2, 3, 64, 64)
    assert model.render(estimate).shape == (2, 3, 112, 112)


def _inputs_of(model: CESTModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
    captured = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, args, out, _n=name: captured.update({_n: args[0]}))
             for name in ("reflectance_net", "illumination_net")]
    try:
        with torch.no_grad():
            estimate = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    captured["estimate"] = estimate
    return captured


def test_cest_reflectance_net_sees_the_validity_mask(morphable, sample_frames):
    # Issue 10, fix 6: unseen texels are 0 in T; the mask channel says which zeros are missing data.
    seen = _inputs_of(small_model(morphable, "cest").eval(), sample_frames.images[:2])
    assert seen["reflectance_net"].shape[1] == 4
    assert torch.equal(seen["reflectance_net"][:, 3:], seen["estimate"].texture_valid)
    assert 0.1 < seen["estimate"].texture_valid.mean() < 0.9  # both kinds of texel present


def test_iest_is_a_fair_ablation(morphable, sample_frames):
    # Issue 10, fix 2: each IEST estimator sees the image at the resolution its CEST counterpart sees, with
    # the same layers; the U-Net's additive skips (no parameters) are off as the image is not UV-aligned.
    cest, iest = small_model(morphable, "cest").eval(), small_model(morphable, "iest").eval()
    images = sample_frames.images[:2]
    seen = {variant: _inputs_of(model, images) for variant, model in (("cest", cest), ("iest", iest))}
    uv = cest.config.uv_size
    for variant in ("cest", "iest"):
        assert seen[variant]["illumination_net"].shape[-2:] == (uv, uv)
        assert seen[variant]["reflectance_net"].shape[-2:] == (uv, uv)
    assert cest.reflectance_net.skips and not iest.reflectance_net.skips
    for name in NETWORKS:
        counts = [sum(p.numel() for p in getattr(m, name).parameters()) for m in (cest, iest)]
        # Only the first convolution differs where CEST stacks more input channels.
        first = next(m for m in getattr(cest, name).modules() if isinstance(m, torch.nn.Conv2d))
        extra = (first.in_channels - 3) * first.out_channels * 9
        assert counts[0] - counts[1] == extra
