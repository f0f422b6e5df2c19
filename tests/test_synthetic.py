
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cest.render.camera import rotation_matrix
from cest.render.lighting import shade
from cest.synthetic import SyntheticFaces, SyntheticSpec, euler_to_rotvec, procedural_reflectance, sh_for_light
from jobs.frames import frames_from_rows, read_clip_rows
from jobs.synthetic import clip_generator, main, read_ground_truth, segment_key

SMALL_SPEC = SyntheticSpec(image_size=96, uv_size=64)


def test_euler_angles_compose_roll_pitch_yaw_like_scipy():
    angles = torch.tensor([[0.0, 0.0, 0.0], [1.5, -0.5, 0.3], [-1.57, 0.52, -0.35], [0.2, 0.1, 3.0]],
                          dtype=torch.float64)
    rotvec = euler_to_rotvec(*angles.unbind(-1))
    expected = Rotation.from_euler("ZXY", angles[:, [2, 1, 0]].numpy()).as_matrix()  # R = Rz(roll) Rx(pitch) Ry(yaw)
    assert np.allclose(rotation_matrix(rotvec).numpy(), expected, atol=1e-9)


def test_light_is_ambient_plus_a_clamped_cosine():
    direction = torch.nn.functional.normalize(torch.tensor([[0.3, 0.5, 0.8]]), dim=-1)
    sh = sh_for_light(torch.tensor([0.6]), torch.tensor([0.4]), direction)
    toward, away = shade(direction[:, None], sh)[0, 0, 0], shade(-direction[:, None], sh)[0, 0, 0]
    # The 9-term SH approximation of max(0, cos): 1.0625 at cos = 1 and 0.0625 at cos = -1.
    assert toward.item() == pytest.approx(0.6 + 0.4 * 1.0625, rel=1e-5)
    assert away.item() == pytest.approx(0.6 + 0.4 * 0.0625, rel=1e-5)


def test_reflectance_differs_per_identity_and_has_darker_brows_and_redder_lips(morphable):
    maps = [procedural_reflectance(morphable, 64, torch.Generator().manual_seed(s)) for s in range(3)]
    assert all((a - b).abs().mean() > 0.01 for a, b in [(maps[0], maps[1]), (maps[1], maps[2])])
    uv = morphable.uv[morphable.landmark_indices]
    texel = lambda point: maps[0][:, int(point[1] * 64), int(point[0] * 64)]  # noqa: E731
    skin, brow, lip = texel(uv[30] + torch.tensor([0.08, 0.0])), texel(uv[19]), texel(uv[51:58].mean(0))
    assert brow.mean() < 0.8 * skin.mean()
    assert lip[0] / lip[1] > skin[0] / skin[1]  # redder
    assert not torch.allclose(maps[0], maps[0].flip(-1), atol=1e-3)  # asymmetric


@pytest.fixture(scope="module")
def clip(morphable):
    return SyntheticFaces(morphable, SMALL_SPEC).clip(5, torch.Generator().manual_seed(3))


def test_a_clip_keeps_identity_and_reflectance_while_pose_expression_and_light_move(morphable, clip):
    assert clip.images.shape == (5, 3, 96, 96) and clip.reflectance.shape == (3, 64, 64)
    assert torch.equal(clip.alpha_identity, clip.alpha_identity[:1].expand(5, -1))
    assert clip.alpha_identity.abs().max() <= 3
    assert (clip.alpha_expression >= 0).all() and (clip.alpha_expression <= 1).all()
    for moving in (clip.viewpoint, clip.sh):
        assert (moving[1:] - moving[:1]).abs().max() > 1e-3
    limits = torch.tensor([90.0, 30.0, 20.0])
    assert (clip.yaw_pitch_roll.abs() <= limits).all()
    # The stored viewpoint is the pose the angles describe.
    angles = torch.deg2rad(clip.yaw_pitch_roll)
    assert torch.allclose(clip.viewpoint[:, 1:4], euler_to_rotvec(*angles.unbind(-1)), atol=1e-5)


def test_clip_images_are_the_renderer_output_inside_the_mask_and_landmarks_lie_on_the_face(morphable, clip):
    faces = SyntheticFaces(morphable, SMALL_SPEC)
    vertices = morphable.shape(clip.alpha_identity, clip.alpha_expression)
    rendered, mask = faces.renderer.render(vertices, clip.viewpoint, clip.reflectance.expand(5, -1, -1, -1), clip.sh)
    assert torch.equal(mask, clip.masks) and 0.05 < mask.mean() < 0.6
    assert torch.allclose(clip.images * mask, rendered.clamp(0, 1) * mask, atol=1e-6)
    inner = clip.landmarks[:, 27:].round().long().clamp(0, 95)  # nose, eyes, mouth: on the face at any yaw
    on_face = torch.stack([clip.masks[b, 0, inner[b, :, 1], inner[b, :, 0]] for b in range(5)])
    assert on_face.mean() > 0.8


def test_the_same_seed_gives_the_same_clip(morphable, clip):
    again = SyntheticFaces(morphable, SMALL_SPEC).clip(5, torch.Generator().manual_seed(3))
    other = SyntheticFaces(morphable, SMALL_SPEC).clip(5, torch.Generator().manual_seed(4))
    assert torch.equal(again.images, clip.images)
    assert not torch.equal(other.alpha_identity, clip.alpha_identity)


def test_poses_cover_the_range(morphable):
    faces = SyntheticFaces(morphable, SyntheticSpec(image_size=64, uv_size=64))
    yaws = torch.cat([faces._track(torch.Generator().manual_seed(s), 1, 90, 30) for s in range(300)])
    assert yaws.min() < -80 and yaws.max() > 80 and yaws.abs().max() <= 91


def test_the_job_writes_the_pipeline_schema_and_a_ground_truth_sidecar(morphable, tmp_path, capsys):
    assert main(["--output", str(tmp_path), "--clips", "2", "--frames", "2", "--seed", "7"]) == 0
    rows = list(read_clip_rows(tmp_path))  # validates every clip file against pipelines.schema
    truth = read_ground_truth(tmp_path)
    assert sorted(row["segment_key"] for row in rows) == sorted(truth) == [segment_key(7, 0), segment_key(7, 1)]
    frames = frames_from_rows(rows, 64, 4)  # the training side's reader, unchanged
    assert frames.images.shape == (4, 3, 64, 64) and frames.clip_ids.tolist() == [0, 0, 1, 1]

    # The sidecar holds what the clip was drawn from: regenerating clip 1 gives the same numbers and images.
    from cest.synthetic import load_background_photos

    clip = SyntheticFaces(morphable, SyntheticSpec(), load_background_photos()).clip(2, clip_generator(7, 1))
    row = next(r for r in rows if r["segment_key"] == segment_key(7, 1))
    stored = truth[segment_key(7, 1)]
    assert np.allclose(stored["viewpoint"], clip.viewpoint.numpy(), atol=1e-6)
    assert np.allclose(stored["alpha_expression"], clip.alpha_expression.numpy(), atol=1e-6)
    assert np.abs(stored["reflectance"] - clip.reflectance.numpy()).max() < 1e-4
    assert np.allclose(row["landmarks"], clip.landmarks.numpy(), atol=1e-4)
    assert np.array_equal(row["masks"], clip.masks[:, 0].numpy().astype(np.uint8))
    assert np.abs(row["frames"].astype(float) / 255 - clip.images.permute(0, 2, 3, 1).numpy()).mean() < 0.02
    assert main(["--output", str(tmp_path), "--clips", "1"]) == 2  # refuses to mix sets
    assert "already holds clips" in capsys.readouterr().err
