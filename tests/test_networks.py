import pytest
import torch

from cest.config import Config, ModelConfig, config_from_dict, load_config, save_config
from cest.networks import Encoder, ReflectanceUNet, ResidualEncoder

WIDTHS = (8, 8, 16, 16, 16, 16)


@pytest.mark.parametrize("size", [32, 64, 96, 112, 224])
def test_encoders_work_at_every_multiple_of_32_and_112(size):
    torch.manual_seed(0)
    image = torch.rand(2, 3, size, size)
    assert Encoder(3, 7, WIDTHS, 1e-3)(image).shape == (2, 7)
    assert ResidualEncoder(3, 69, WIDTHS, 1e-3)(image).shape == (2, 69)


@pytest.mark.parametrize("size", [64, 128])
def test_unet_keeps_the_uv_size_and_outputs_tanh_range(size):
    torch.manual_seed(0)
    net = ReflectanceUNet(3, 3, (8, 8, 16, 16, 16))
    out = net(torch.rand(2, 3, size, size) * 4 - 2)
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1


def test_unet_rejects_a_size_it_cannot_halve_six_times():
    with pytest.raises(ValueError, match="multiple of 64"):
        ReflectanceUNet(3, 3, (8, 8, 8, 8, 8))(torch.rand(1, 3, 96, 96))


def _skip_sizes(net: ReflectanceUNet, size: int) -> list[int]:
    """Sizes of the encoder maps the decoder adds, recorded by hooks on the real forward pass."""
    sizes = []
    hooks = [stage.register_forward_hook(lambda m, a, out: sizes.append(out.shape[-1])) for stage in net.down]
    try:
        net.eval()(torch.rand(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes if net.skips else []


def test_unet_skips_run_from_half_to_one_32nd_with_none_at_full_size():
    # Issue 10, fix 3 (App. B.1 Table 2): the first convolution has stride 2; a full-size skip would let the
    # network copy the illuminated texture into the reflectance.
    net = ReflectanceUNet(3, 3, (8, 8, 16, 16, 16)).eval()
    assert _skip_sizes(net, 128) == [64, 32, 16, 8, 4]
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.stride == (2, 2)


def test_unet_without_skips_has_the_same_parameters_and_ignores_fine_detail_routes():
    with_skips, without = ReflectanceUNet(3, 3, (8, 8, 16, 16, 16)), ReflectanceUNet(3, 3, (8, 8, 16, 16, 16), False)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(with_skips) == count(without)
    without.load_state_dict(with_skips.state_dict())
    x = torch.rand(1, 3, 64, 64)
    assert not torch.allclose(with_skips.eval()(x), without.eval()(x))


def test_unet_skips_are_added_not_concatenated():
    net = ReflectanceUNet(3, 3, (8, 16, 16, 32, 32))
    # With concatenation the decoder convolutions would take 2x the channels.
    for level, conv in enumerate(net.up_out):
        assert conv[0].in_channels == (8, 16, 16, 32, 32)[level]
    assert _skip_sizes(net, 64) == [32, 16, 8, 4, 2]


def test_unet_output_is_spatially_aligned_with_its_input():
    # A localised change of the input changes the output most near the same place (UV alignment).
    torch.manual_seed(0)
    net = ReflectanceUNet(3, 3, (8, 8, 16, 16, 16)).eval()
    base = torch.rand(1, 3, 64, 64)
    bumped = base.clone()
    bumped[..., 40:44, 10:14] += 1
    change = (net(bumped) - net(base)).abs().sum(1)[0]
    row, col = divmod(int(change.argmax()), 64)
    assert 36 <= row <= 48 and 6 <= col <= 18


def test_heads_start_small_so_estimates_start_at_their_offsets():
    torch.manual_seed(0)
    out = Encoder(3, 9, WIDTHS, 1e-3)(torch.rand(4, 3, 64, 64))
    assert out.abs().max() < 0.05


def test_config_round_trips_through_yaml(tmp_path):
    config = Config()
    config.model.variant = "iest"
    config.loss.consistency_mode = "clip_average"
    config.data.frames_per_clip = 8
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_config_defaults_follow_the_paper():
    config = Config()
    assert config.optim.learning_rate == 1e-3
    assert (config.data.clips_per_batch, config.data.frames_per_clip, config.data.batch_size) == (32, 4, 128)
    assert config.model.image_size == 224 and config.model.variant == "cest"
    assert config.loss.symmetry and config.loss.consistency and config.loss.consistency_mode == "pairing"


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="variant"):
        ModelConfig(variant="joint")
    with pytest.raises(ValueError, match="multiple of 64"):
        ModelConfig(uv_size=96)
    with pytest.raises(ValueError, match="at least 32"):
        ModelConfig(image_size=16)
    with pytest.raises(ValueError, match="unknown fields"):
        config_from_dict({"loss": {"w_landmarks": 1.0}})
    with pytest.raises(ValueError, match="distance"):
        config_from_dict({"loss": {"distance": "l2"}})
