"""Per-clip stochastic pairing (paper Sec. 3.3, Eq. 8) and per-clip averages (FML-style, App. B.2).

For every frame i of a batch, `partner_indices` draws a partner j uniformly from the other frames of the
same clip (j != i). The consistency term then re-renders frame i with frame j's reflectance: one extra
reconstruction per frame, so the objective grows linearly with the number of frames instead of
quadratically. The computation is vectorised: one stable sort of the clip ids groups the frames, after which
every step is an O(batch) tensor operation (no batch x batch matrix is ever formed).

Fallback: a frame that is alone in its clip in the batch is its own partner, so its consistency term
re-renders it with its own reflectance (the same as its photometric term). Batches built by
`cest.train_local.clip_batches` never contain such frames (at least 2 frames per clip).
"""

import torch


def _check_clip_ids(clip_ids: torch.Tensor) -> None:
    if clip_ids.dim() != 1:
        raise ValueError(f"clip_ids must be 1-D (one id per frame), got shape {tuple(clip_ids.shape)}")
    if clip_ids.dtype.is_floating_point or clip_ids.dtype == torch.bool:
        raise ValueError(f"clip_ids must be integers, got {clip_ids.dtype}")


def partner_indices(clip_ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) integer clip ids -> (B,) int64 partner index per frame: same clip, different frame.

    Partners are uniform over the other frames of the clip; a frame alone in its clip gets itself.
    `generator` (on any device) makes the draw reproducible.
    """
    _check_clip_ids(clip_ids)
    count = clip_ids.numel()
    device = clip_ids.device
    order = torch.argsort(clip_ids, stable=True)
    sorted_ids = clip_ids[order]
    position = torch.arange(count, device=device)

    starts_group = torch.ones(count, dtype=torch.bool, device=device)
    starts_group[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group_start = torch.where(starts_group, position, 0).cummax(0).values
    group_starts = position[starts_group]
    group_sizes = torch.diff(group_starts, append=torch.tensor([count], device=device))
    size = torch.repeat_interleave(group_sizes, group_sizes)
    offset = position - group_start

    # Uniform k in [0, size - 2], then skip the frame itself: uniform over the other size - 1 frames.
    # float64 keeps floor(u * n) < n for any realistic n.
    # Drawn where the generator lives (a CPU generator may drive CUDA clip ids), then moved to the ids.
    draw_device = generator.device if generator is not None else device
    uniform = torch.rand(count, dtype=torch.float64, device=draw_device, generator=generator).to(device)
    others = (size - 1).clamp(min=1)
    k = torch.minimum((uniform * others).long(), others - 1)
    partner_offset = torch.where(size > 1, k + (k >= offset).long(), offset)

    partners = torch.empty_like(order)
    partners[order] = order[group_start + partner_offset]
    return partners


def clip_average(values: torch.Tensor, clip_ids: torch.Tensor) -> torch.Tensor:
    """(B, ...) values -> (B, ...) where every frame holds the mean over the frames of its clip."""
    _check_clip_ids(clip_ids)
    if values.shape[0] != clip_ids.shape[0]:
        raise ValueError(f"{values.shape[0]} values for {clip_ids.shape[0]} clip ids")
    _, group = torch.unique(clip_ids, return_inverse=True)
    groups = int(group.max()) + 1
    flat = values.reshape(values.shape[0], -1)
    sums = flat.new_zeros(groups, flat.shape[1]).index_add(0, group, flat)
    counts = torch.bincount(group, minlength=groups).to(flat.dtype)
    return (sums / counts[:, None])[group].reshape(values.shape)
