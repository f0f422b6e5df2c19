import torch

from cest.augment import IBUG68_MIRROR, mirror_clips, mirror_landmarks
from cest.morphable import load_sfm
from cest.render.camera import project
from cest.step import Batch


def test_mirrored_landmarks_of_a_turned_face_are_those_of_the_face_turned_the_other_way():
    """The mean face (left-right symmetric) at a pose and in a mirror: the landmarks of the mirrored pose
    (rotation vector (x, -y, -z), x translation negated), point by point, so the renumbering is right too."""
    model = load_sfm()
    points = model.landmarks(model.mean_shape[None])
    pose = torch.tensor([[0.6, 0.1, 0.6, 0.2, 0.05, -0.03, 0.0]])
    mirrored_pose = pose * torch.tensor([1.0, 1, -1, -1, -1, 1, 1])
    seen, expected = (project(points, viewpoint, 64)[..., :2] for viewpoint in (pose, mirrored_pose))
    error = (mirror_landmarks(seen, 64) - expected).norm(dim=-1)
    # px at 64 px: the mean face is symmetric to 0.24 px here; an off-by-one reflection (63 - x) gives 1 px and
    # no renumbering 32 px
    assert error.max() < 0.5
    assert (seen[0, IBUG68_MIRROR] - seen[0]).norm(dim=-1).max() > 10  # the test can tell left from right
    assert sorted(IBUG68_MIRROR) == list(range(68))
    assert [IBUG68_MIRROR[i] for i in IBUG68_MIRROR] == list(range(68))  # mirroring twice changes nothing


def clip_batch(clips: int, frames: int = 2, size: int = 8) -> Batch:
    torch.manual_seed(0)
    count = clips * frames
    return Batch(torch.rand(count, 3, size, size), (torch.rand(count, 1, size, size) > 0.5).float(),
                 torch.rand(count, 68, 2) * size, torch.arange(clips).repeat_interleave(frames))


def test_clips_are_mirrored_whole_about_half_of_them_and_reproducibly():
    batch = clip_batch(200)
    out = mirror_clips(batch, 0.5, torch.Generator().manual_seed(3))
    flipped = (out.images == batch.images.flip(-1)).flatten(1).all(1)
    kept = (out.images == batch.images).flatten(1).all(1)
    assert (flipped ^ kept).all()
    per_clip = flipped.view(200, 2)
    assert (per_clip[:, 0] == per_clip[:, 1]).all()  # both frames of a clip alike
    assert 70 < int(per_clip[:, 0].sum()) < 130
    assert torch.equal(out.masks[flipped], batch.masks[flipped].flip(-1))
    assert torch.equal(out.landmarks[flipped], mirror_landmarks(batch.landmarks[flipped], 8))
    assert torch.equal(out.landmarks[kept], batch.landmarks[kept])
    again = mirror_clips(batch, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(again.images, out.images)


def test_probability_zero_leaves_the_batch_and_the_generator_alone():
    batch, generator = clip_batch(4), torch.Generator().manual_seed(5)
    assert mirror_clips(batch, 0.0, generator) is batch
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(5).get_state())
