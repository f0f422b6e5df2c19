"""cest.eval.now on known answers built from the Surrey Face Model (no NoW data needed), the picked-points
reader, the challenge layout and the folder checks."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cest.eval.files import DatasetError, read_mesh
from cest.eval.now import (LANDMARKS, face_crop, now_distances, now_items, now_summary, read_picked_points,
                           write_prediction)
from cest.eval.surface import vertex_normals
from sfm_faces import random_face_mm


@pytest.fixture(scope="module")
def face():
    """A random SFM identity in millimetres: (vertices, triangles, its 7 NoW landmarks)."""
    vertices, triangles, landmarks = random_face_mm(5)
    return vertices, triangles, vertices[landmarks[list(LANDMARKS)]]


def test_the_crop_sphere_is_now_evaluations():
    """Landmarks placed by hand: eyes at x = -45, -15, 15, 45, nose bottom 50 below the eyes' midpoint."""
    landmarks = np.array([[-45, 0, 0], [-15, 0, 0], [15, 0, 0], [45, 0, 0], [0, -50, 0], [-25, -80, 0], [25, -80, 0.0]])
    centre, radius = face_crop(landmarks)
    assert np.allclose(centre, [0, -35, 0])  # 30 % of the way from the nose bottom to the bridge
    assert radius == pytest.approx(1.4 * (90 + 50) / 2)


def test_a_prediction_equal_to_the_scan_scores_zero(face):
    vertices, triangles, landmarks = face
    assert now_distances(vertices, triangles, landmarks, vertices, landmarks).max() < 1e-9


def test_the_same_face_in_another_frame_and_unit_scores_zero(face):
    """The prediction in metres, turned 25 degrees and moved: Procrustes on the 7 points and the refinement
    bring it back (scan in mm)."""
    vertices, triangles, landmarks = face
    rotation = Rotation.from_euler("yxz", [25, -10, 5], degrees=True).as_matrix()
    moved = (vertices @ rotation.T + [30.0, 10.0, -200.0]) / 1000
    moved_landmarks = (landmarks @ rotation.T + [30.0, 10.0, -200.0]) / 1000
    assert now_distances(moved, triangles, moved_landmarks, vertices, landmarks).max() < 1e-6


def test_the_sfm_face_one_mm_off_along_its_normals(face):
    """Every alignment NoW allows hides most of a uniform 1 mm offset along the normals of an open face mask:
    rigid (metrical variant) moves it back toward the camera, median 0.22 mm measured; with scale less still.
    (The distance itself, held in place, is 1 mm: test_eval_micc.) An unaligned offset would read 1 mm."""
    vertices, triangles, landmarks = face
    offset = vertices + vertex_normals(vertices, triangles)
    nearest = [int(np.argmin(np.linalg.norm(vertices - point, axis=1))) for point in landmarks]
    metrical = now_distances(offset, triangles, offset[nearest], vertices, landmarks, metric_unit_mm=1.0)
    assert 0.1 < np.median(metrical) < 0.4
    scaled = now_distances(offset, triangles, offset[nearest], vertices, landmarks)
    assert np.median(scaled) < np.median(metrical)


def test_scan_geometry_outside_the_face_sphere_is_ignored(face):
    """Shoulders 160 mm below the nose bottom: cropped away (0); the metrical score of a mesh 2 mm too far
    back would be 2 mm, so the scan points are what the distance is measured from."""
    vertices, triangles, landmarks = face
    shoulders = np.stack(np.meshgrid(np.linspace(-150, 150, 20), [-160.0], np.linspace(-60, 0, 5)), -1).reshape(-1, 3)
    scan = np.vstack([vertices, shoulders + landmarks[4]])
    assert now_distances(vertices, triangles, landmarks, scan, landmarks).max() < 1e-9


def test_summary_pools_every_distance_of_every_image():
    summary = now_summary([np.array([1.0, 2.0]), np.array([3.0, 4.0, 10.0])])
    assert summary == {"now_median_mm": 3.0, "now_mean_mm": 4.0, "now_std_mm": pytest.approx(np.std([1, 2, 3, 4, 10])),
                       "now_images": 2}


def picked_points(path, count=7):
    points = "\n".join(f' <point x="{i}.5" y="-{i}" z="{2 * i}" name="{i}" active="1"/>' for i in range(count))
    path.write_text(f'<!DOCTYPE PickedPoints>\n<PickedPoints>\n <DocumentData>\n  <DataFileName name="x.obj"/>\n'
                    f' </DocumentData>\n{points}\n</PickedPoints>\n')


def test_picked_points_and_the_challenge_layout(tmp_path, face):
    picked_points(tmp_path / "a.pp")
    assert np.allclose(read_picked_points(tmp_path / "a.pp"), [[i + 0.5, -i, 2 * i] for i in range(7)])
    picked_points(tmp_path / "b.pp", 6)
    with pytest.raises(DatasetError, match="6 picked points, expected 7"):
        read_picked_points(tmp_path / "b.pp")
    vertices, triangles, landmarks = face
    obj = write_prediction(tmp_path / "pred", "FaMoS_180424_03335_TA/multiview_neutral/IMG_0101.jpg",
                           vertices, triangles, landmarks)
    assert obj == tmp_path / "pred/FaMoS_180424_03335_TA/multiview_neutral/IMG_0101.obj"
    read_vertices, read_triangles = read_mesh(obj)
    assert np.allclose(read_vertices, vertices, atol=1e-6) and np.array_equal(read_triangles, triangles)
    assert np.allclose(np.load(obj.with_suffix(".npy")), landmarks)


def test_the_folder_check_names_what_is_missing(tmp_path):
    with pytest.raises(DatasetError, match="NoW: .*imagepathsvalidation.txt"):
        now_items(tmp_path)
    (tmp_path / "imagepathsvalidation.txt").write_text("FaMoS_1/selfie/IMG_1.jpg\n")
    with pytest.raises(DatasetError, match="missing .*iphone_pictures/FaMoS_1/selfie/IMG_1.jpg") as raised:
        now_items(tmp_path)
    assert "\n" not in str(raised.value)
    image = tmp_path / "NoW_Dataset/final_release_version/iphone_pictures/FaMoS_1/selfie/IMG_1.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    with pytest.raises(DatasetError, match="missing .*scans/FaMoS_1/\\*.obj"):
        now_items(tmp_path)
    (tmp_path / "scans/FaMoS_1").mkdir(parents=True)
    (tmp_path / "scans/FaMoS_1/scan.obj").write_text("v 0 0 0\n")
    with pytest.raises(DatasetError, match="missing .*scans_lmks_onlypp/FaMoS_1/\\*.pp"):
        now_items(tmp_path)
    (tmp_path / "scans_lmks_onlypp/FaMoS_1").mkdir(parents=True)
    picked_points(tmp_path / "scans_lmks_onlypp/FaMoS_1/scan.pp")
    [item] = now_items(tmp_path)
    assert item.challenge == "selfie" and item.scan.name == "scan.obj"
