"""Mirrored clips: a training-batch augmentation (not in the paper, Sec. 4.1 trains on the frames as they are).

A face seen in a mirror is another plausible face, turned the other way. Real clips are rarely balanced between
left and right turns (the sample clips of `make preprocess` turn mostly one way), and a model trained on them
learns that bias: it turns every profile that way. Mirroring whole clips (every frame alike, so that the
consistency term still pairs frames of one face) makes both directions equally likely.

Shapes: images (B, 3, H, W), masks (B, 1, H, W), landmarks (B, 68, 2) in pixels with pixel centres at +0.5 (the
renderer's convention, cest.render.camera), clip_ids (B,).
"""

import torch

from cest.step import Batch

# The iBUG 68-point layout mirrored: index i of a mirrored face's landmarks is index IBUG68_MIRROR[i] of the
# original's (jaw 0-16 reversed, brows 17-21 <-> 26-22, nose base 31-35 reversed, eyes 36-41 <-> 45-42 and
# 46-47, outer lips 48-54 and 55-59 reversed, inner lips 60-64 and 65-67 reversed; the midline stays).
IBUG68_MIRROR = (
    [16 - i for i in range(17)]
    + [26, 25, 24, 23, 22, 21, 20, 19, 18, 17]
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


def mirror_landmarks(landmarks: torch.Tensor, width: int) -> torch.Tensor:
    """(..., 68, 2) pixel landmarks of an image `width` pixels wide -> those of the image flipped left-right."""
    mirrored = landmarks[..., IBUG68_MIRROR, :].clone()
    mirrored[..., 0] = width - mirrored[..., 0]
    return mirrored


def mirror_clips(batch: Batch, probability: float, generator: torch.Generator | None = None) -> Batch:
    """The batch with each clip mirrored (all its frames) with `probability`, drawn from `generator`."""
    if probability <= 0:
        return batch
    clips, clip_of_frame = torch.unique(batch.clip_ids, return_inverse=True)
    device = generator.device if generator is not None else batch.clip_ids.device
    mirrored = (torch.rand(len(clips), generator=generator, device=device) < probability).to(batch.images.device)
    frame = mirrored[clip_of_frame]
    if not frame.any():
        return batch
    pixels = frame[:, None, None, None]
    return Batch(torch.where(pixels, batch.images.flip(-1), batch.images),
                 torch.where(pixels, batch.masks.flip(-1), batch.masks),
                 torch.where(frame[:, None, None], mirror_landmarks(batch.landmarks, batch.images.shape[-1]),
                             batch.landmarks),
                 batch.clip_ids)
