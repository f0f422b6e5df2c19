"""Short training runs on real frames (8 VoxCeleb-sample clips through the preprocessing pipeline, 64 x 64,
4 clips x 2 frames per batch).

Evaluation uses all 32 frames with the plain photometric term (no symmetry/consistency), before and after.
Measured on a 2-core CPU (120 steps, 15-60 s per run on a quiet machine), seed 0, with the reflectance U-Net of
the paper's Table 2 (no full-resolution skip), the validity mask as its fourth input and the loss defaults of
the issue 10 sweep (L1 photometric distance, w_landmark 10):
- CEST with symmetry and consistency: photometric (L1) 0.170 -> 0.048; landmark (fraction of the image size)
  0.116 -> 0.029.
- Degeneracy (paper Sec. 3.3, Fig. 4e): with both constraints off the shading is nearly flat, its std over the
  face 0.030 against 0.079 with the constraints, and the reflectance copies the unwrapped image more closely:
  correlation 0.911 against 0.799. (With the earlier U-Net, which had a full-resolution skip, and L2,1 with
  w_landmark 1: 0.015 against 0.058, correlation 0.921 against 0.847; the unconstrained bound was 0.025 then,
  0.04 now.)
"""

import pytest
import torch

from cest.config import Config, DataConfig, LossConfig, ModelConfig, OptimConfig
from cest.losses import degeneracy_measures, objective
from cest.model import CESTModel
from cest.morphable import load_sfm
from cest.train_local import FrameSet, clip_batches, train


STEPS = 120
# The widths of jobs/configs/cpu_demo.yaml (wider than tests/small_model.py's SMALL, which is for plumbing tests).
LEARNING_MODEL = dict(image_size=64, uv_size=64, encoder_widths=(16, 32, 64, 64, 64, 64),
                      unet_widths=(16, 32, 32, 64, 64))


def evaluate(model: CESTModel, frames) -> dict[str, float]:
    # Train-mode BatchNorm (batch statistics over the 32 frames): after a hundred steps the running
    # statistics still lag the weights.
    with torch.no_grad():
        estimate = model(frames.images)
        terms = objective(model, estimate, frames.images, frames.masks, frames.landmarks, frames.clip_ids,
                          LossConfig(symmetry=False, consistency=False))
        measures = degeneracy_measures(model, estimate, frames.masks)
    return {name: float(value) for name, value in terms.items()} | measures


def run(frames, symmetry: bool, consistency: bool, seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    config = Config(model=ModelConfig(**LEARNING_MODEL), loss=LossConfig(symmetry=symmetry, consistency=consistency),
                    data=DataConfig(clips_per_batch=4, frames_per_clip=2))
    torch.manual_seed(seed)
    model = CESTModel(config.model, load_sfm())
    before = evaluate(model, frames)
    generator = torch.Generator().manual_seed(seed)
    train(model, config, clip_batches(frames, config.data, generator), STEPS, generator)
    return before, evaluate(model, frames)


@pytest.fixture(scope="module")
def constrained(sample_frames):
    return run(sample_frames, symmetry=True, consistency=True)


@pytest.fixture(scope="module")
def unconstrained(sample_frames):
    return run(sample_frames, symmetry=False, consistency=False)


@pytest.mark.slow
def test_training_lowers_photometric_and_landmark_losses(constrained):
    before, after = constrained
    print(f"photometric {before['photometric']:.4f} -> {after['photometric']:.4f}, "
          f"landmark {before['landmark']:.4f} -> {after['landmark']:.4f}")
    assert after["photometric"] < 0.5 * before["photometric"]
    assert after["landmark"] < 0.5 * before["landmark"]


@pytest.mark.slow
def test_without_constraints_the_reflectance_copies_the_image(constrained, unconstrained):
    with_constraints, without = constrained[1], unconstrained[1]
    print(f"shading std {with_constraints['shading_std']:.4f} (constraints) vs {without['shading_std']:.4f} (none); "
          f"texture correlation {with_constraints['texture_correlation']:.4f} vs {without['texture_correlation']:.4f}")
    # The unconstrained model also fits the images (the degenerate solution reconstructs well) ...
    assert without["photometric"] < 0.5 * unconstrained[0]["photometric"]
    # ... with a nearly constant shading, flatter than under the constraints, and a copied texture.
    assert without["shading_std"] < 0.04
    assert without["shading_std"] < 0.5 * with_constraints["shading_std"]
    assert without["texture_correlation"] > 0.9
    assert without["texture_correlation"] > with_constraints["texture_correlation"]


def _synthetic_frames(faces, seed: int, clips: int):
    """`clips` synthetic clips of 2 frames (other identities for another seed) and their true viewpoints."""
    from jobs.synthetic import clip_generator

    drawn = [faces.clip(2, clip_generator(seed, k)) for k in range(clips)]
    frames = FrameSet(torch.cat([c.images for c in drawn]), torch.cat([c.masks for c in drawn]),
                      torch.cat([c.landmarks for c in drawn]), torch.arange(clips).repeat_interleave(2))
    return frames, torch.cat([c.viewpoint for c in drawn])


@pytest.mark.slow
def test_held_apart_pose_error_halves_in_a_short_synthetic_run():
    """The recipe learns: 256 synthetic clips at 64 px, 970 landmark warm-up steps and 30 full steps (cosine
    schedule, w_regulariser 0.1, 8 clips x 2 frames). On 32 held-apart clips (other identities, poses and lights)
    the pose error went from 49.8 degrees (the untrained frontal guess) to 20.6 (seed 0; 19.8 with seed 1, 20.7
    after 1,530 steps); a broken landmark term, projection or crop leaves it near 50. (Tiny widths reached only
    25.5, 630 steps on 128 clips 32.7.)"""
    from cest.eval.synthetic_metrics import rotation_error_deg
    from cest.synthetic import SyntheticFaces, SyntheticSpec

    morphable = load_sfm()
    faces = SyntheticFaces(morphable, SyntheticSpec(image_size=64, uv_size=64))
    train_frames, _ = _synthetic_frames(faces, seed=0, clips=256)
    test_frames, true_viewpoints = _synthetic_frames(faces, seed=1000, clips=32)
    config = Config(model=ModelConfig(**LEARNING_MODEL),
                    loss=LossConfig(w_regulariser=0.1, landmark_warmup_steps=970),
                    optim=OptimConfig(schedule="cosine"), data=DataConfig(clips_per_batch=8, frames_per_clip=2))
    torch.manual_seed(0)
    model = CESTModel(config.model, morphable)

    def pose_error() -> float:
        model.eval()
        with torch.no_grad():
            predicted = model(test_frames.images, geometry_only=True).viewpoint
        model.train()
        return float(rotation_error_deg(predicted[:, 1:4], true_viewpoints[:, 1:4]).mean())

    before = pose_error()
    generator = torch.Generator().manual_seed(0)
    train(model, config, clip_batches(train_frames, config.data, generator), 1000, generator)
    after = pose_error()
    print(f"held-apart pose error {before:.1f} -> {after:.1f} degrees")
    assert before > 45
    assert after < 0.5 * before
