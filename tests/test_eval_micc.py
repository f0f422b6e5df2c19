"""cest.eval.micc on known answers built from the Surrey Face Model (no MICC data needed): a scan equal to the
prediction, the same face moved, turned and scaled, a face 1 mm off along its normals, a scan with shoulders
and hair beyond the 95 mm crop, and the folder checks."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cest.eval.files import DatasetError
from cest.eval.micc import CROP_RADIUS_MM, NOSE_TIP, micc_errors, micc_subjects, micc_summary
from cest.eval.surface import closest_points, vertex_normals
from sfm_faces import random_face_mm


@pytest.fixture(scope="module")
def face():
    """A random SFM identity in millimetres: (vertices, triangles, nose tip)."""
    vertices, triangles, landmarks = random_face_mm(3)
    return vertices, triangles, vertices[landmarks[NOSE_TIP]]


def test_a_scan_equal_to_the_prediction_scores_zero(face):
    vertices, triangles, tip = face
    errors = micc_errors(vertices, triangles, vertices, triangles, tip)
    assert errors["mean"] < 1e-9 and errors["rmse"] < 1e-9


def test_the_same_face_moved_turned_and_scaled_scores_zero_after_icp(face):
    """Scan: the face turned 10/5/2 degrees (yaw/pitch/roll), scaled by 1.08 and shifted by (4, -3, 6) mm."""
    vertices, triangles, tip = face
    rotation = Rotation.from_euler("yxz", [10, 5, 2], degrees=True).as_matrix()
    scan = 1.08 * vertices @ rotation.T + [4.0, -3.0, 6.0]
    errors = micc_errors(vertices, triangles, scan, triangles, tip)
    assert errors["mean"] < 1e-6 and errors["rmse"] < 1e-6


def test_a_face_one_mm_off_along_its_normals(face):
    """Held in place (no alignment), every scan vertex is 1 mm from the offset surface (0.98-1.0 mm: the
    offset surface's triangles are not exactly parallel). With ICP and isotropic scale the protocol absorbs most
    of a uniform offset into the scale, as it must for a shape error that ignores size: 0.125 mm measured."""
    vertices, triangles, tip = face
    offset = vertices + vertex_normals(vertices, triangles)
    interior = np.linalg.norm(vertices - tip, axis=1) < 60  # away from the open boundary
    held = closest_points(vertices[interior], offset, triangles)[0]
    assert np.median(held) == pytest.approx(1.0, abs=0.01) and held.min() > 0.9 and held.max() < 1.01
    errors = micc_errors(offset, triangles, vertices, triangles, tip, scan_nose_tip=tip)
    assert 0.05 < errors["mean"] < 0.3 and errors["mean"] < errors["rmse"] < 0.4


def sheet(centre, width, height, depth, steps=6):
    """A flat grid of triangles (the shoulders, a hair cap) centred at `centre`, normal along z."""
    u, v = np.meshgrid(np.linspace(-width / 2, width / 2, steps), np.linspace(-height / 2, height / 2, steps))
    points = np.stack([u.ravel(), v.ravel(), np.full(u.size, depth)], 1) + [centre[0], centre[1], 0]
    index = np.arange(steps * steps).reshape(steps, steps)
    quads = np.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]], -1).reshape(-1, 4)
    return points, np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])


def with_extra(vertices, triangles, extra):
    points, faces = extra
    return np.vstack([vertices, points]), np.vstack([triangles, faces + len(vertices)])


def test_shoulders_and_hair_outside_the_crop_are_cropped_away(face):
    """Shoulders 150 mm below the nose and a hair cap 120 mm above it (behind the face, so the nose tip stays
    the nearest point) change nothing; the same sheet inside the crop does (so the crop is what removed it)."""
    vertices, triangles, tip = face
    shoulders = sheet(tip + [0, -150, 0], 300, 60, tip[2] - 80)
    hair = sheet(tip + [0, 120, 0], 160, 60, tip[2] - 40)
    scan, scan_triangles = with_extra(*with_extra(vertices, triangles, shoulders), hair)
    assert np.all(np.linalg.norm(scan[len(vertices):] - tip, axis=1) > CROP_RADIUS_MM)
    errors = micc_errors(vertices, triangles, scan, scan_triangles, tip)
    assert errors["mean"] < 1e-6
    inside = with_extra(vertices, triangles, sheet(tip + [0, 0, 0], 40, 40, tip[2] - 60, steps=4))
    assert micc_errors(vertices, triangles, *inside, tip)["mean"] > 0.1  # 0.30 mm measured


def test_summary_is_per_setting_mean_and_std_over_subjects():
    per_subject = {"Indoor-Cooperative": {"subject_01": {"mean": 1.0, "rmse": 2.0}, "subject_02": {"mean": 3.0, "rmse": 4.0}},
                   "PTZ-Outdoor": {"subject_01": {"mean": 5.0, "rmse": 6.0}}}
    summary = micc_summary(per_subject)
    assert summary["micc_cooperative_mean_mm"] == 2.0 and summary["micc_cooperative_mean_mm_std"] == 1.0
    assert summary["micc_cooperative_rmse_mm"] == 3.0 and summary["micc_cooperative_subjects"] == 2
    assert summary["micc_outdoor_mean_mm"] == 5.0 and "micc_indoor_mean_mm" not in summary


def make_subject(root, name, settings=("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor"), scan=True):
    (root / name / "Video").mkdir(parents=True)
    for setting in settings:
        (root / name / "Video" / f"{setting}.mjpg").write_bytes(b"")
    if scan:
        (root / name / "Model" / "frontal1" / "obj").mkdir(parents=True)
        (root / name / "Model" / "frontal1" / "obj" / "110920150452.obj").write_text("v 0 0 0\n")


def test_the_folder_check_names_what_is_missing(tmp_path):
    with pytest.raises(DatasetError, match="MICC Florence: .*absent is not a folder"):
        micc_subjects(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no subject_NN folders"):
        micc_subjects(tmp_path)
    make_subject(tmp_path, "subject_01")
    make_subject(tmp_path, "subject_02", settings=("Indoor-Cooperative", "PTZ-Outdoor"))
    with pytest.raises(DatasetError, match=r"no video .*subject_02/Video/PTZ-Indoor\.mjpg") as raised:
        micc_subjects(tmp_path)
    assert "\n" not in str(raised.value)
    (tmp_path / "subject_02" / "Video" / "PTZ-Indoor.mjpg").write_bytes(b"")
    subjects = micc_subjects(tmp_path)
    assert [s.name for s in subjects] == ["subject_01", "subject_02"] and len(subjects[0].scans) == 1
    make_subject(tmp_path, "subject_03", scan=False)
    with pytest.raises(DatasetError, match="no scan .*subject_03/Model/frontal1"):
        micc_subjects(tmp_path)
