import itertools

import pytest
import torch
from scipy.stats import chisquare

from cest.pairing import clip_average, partner_indices


def _shuffled_clip_ids(sizes: list[int], seed: int) -> torch.Tensor:
    ids = torch.cat([torch.full((n,), 100 + 7 * c) for c, n in enumerate(sizes)])  # sparse, unsorted ids
    return ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(seed))]


def test_partners_share_the_clip_and_differ_from_the_frame():
    clip_ids = _shuffled_clip_ids([4, 2, 3, 8, 5], seed=0)
    for seed in range(20):
        partners = partner_indices(clip_ids, torch.Generator().manual_seed(seed))
        assert partners.dtype == torch.int64 and partners.shape == clip_ids.shape
        assert torch.equal(clip_ids[partners], clip_ids)
        assert (partners != torch.arange(clip_ids.numel())).all()


def test_frame_alone_in_its_clip_is_its_own_partner():
    clip_ids = torch.tensor([5, 3, 5, 9, 3])  # clip 9 has one frame
    partners = partner_indices(clip_ids, torch.Generator().manual_seed(0))
    assert partners[3] == 3
    assert partners[0] == 2 and partners[2] == 0
    assert partners[1] == 4 and partners[4] == 1


def test_partners_are_uniform_over_the_other_frames_of_the_clip():
    clip_ids = _shuffled_clip_ids([4, 6, 2], seed=1)
    generator = torch.Generator().manual_seed(1234)
    draws = 3000
    counts = torch.zeros(clip_ids.numel(), clip_ids.numel())
    for _ in range(draws):
        partners = partner_indices(clip_ids, generator)
        counts[torch.arange(clip_ids.numel()), partners] += 1
    for frame in range(clip_ids.numel()):
        others = [j for j in range(clip_ids.numel()) if clip_ids[j] == clip_ids[frame] and j != frame]
        observed = counts[frame, others]
        assert observed.sum() == draws
        if len(others) > 1:
            # Uniform over the other frames: a chi-square test must not reject (seed fixed, p well above 1e-3).
            assert chisquare(observed.numpy()).pvalue > 1e-3, (frame, observed)
    # A biased draw would be caught: the test statistic is far off for a 60/40 split of 3000 draws.
    assert chisquare([1800, 1200]).pvalue < 1e-3


def test_linear_cost_a_million_frames():
    # A method that formed batch x batch candidate matrices would need 10^12 entries here.
    frames_per_clip = 4
    clip_ids = torch.arange(250_000).repeat_interleave(frames_per_clip)
    clip_ids = clip_ids[torch.randperm(clip_ids.numel(), generator=torch.Generator().manual_seed(0))]
    partners = partner_indices(clip_ids, torch.Generator().manual_seed(0))
    assert torch.equal(clip_ids[partners], clip_ids)
    assert (partners != torch.arange(clip_ids.numel())).all()


def test_partners_are_reproducible_with_a_seed():
    clip_ids = _shuffled_clip_ids([4] * 8, seed=2)
    first = partner_indices(clip_ids, torch.Generator().manual_seed(7))
    second = partner_indices(clip_ids, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_bad_clip_ids_are_rejected():
    with pytest.raises(ValueError, match="1-D"):
        partner_indices(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="integers"):
        partner_indices(torch.zeros(4))


def test_clip_average_matches_a_loop():
    clip_ids = _shuffled_clip_ids([3, 1, 4], seed=3)
    values = torch.randn(clip_ids.numel(), 3, 2, 2, generator=torch.Generator().manual_seed(0))
    averaged = clip_average(values, clip_ids)
    for i, j in itertools.product(range(clip_ids.numel()), repeat=2):
        if clip_ids[i] == clip_ids[j]:
            assert torch.allclose(averaged[i], averaged[j])
    for clip in clip_ids.unique():
        members = clip_ids == clip
        expected = values[members].mean(0)
        assert torch.allclose(averaged[members], expected.expand_as(values[members]), atol=1e-6)
