"""The paper's rendered MICC protocol (cest.eval.micc_rendered) on known answers: Surrey Face Model identities
as scans, rendered and scored."""

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from cest.eval.files import read_coloured_mesh
from cest.eval.micc_rendered import BACKGROUND, RENDER_SIZE, render_scan, rendered_nme
from sfm_faces import random_face_mm


@pytest.fixture(scope="module")
def face():
    return random_face_mm(seed=5)


def test_the_scan_itself_scores_zero_wherever_it_is(face):
    vertices, triangles, landmarks = face
    assert rendered_nme(vertices, triangles, landmarks, vertices, triangles) < 0.01
    turned = Rotation.from_euler("xyz", [4, -6, 3], degrees=True).as_matrix()
    moved = 1.2 * vertices @ turned.T + [15.0, -8.0, 4.0]
    assert rendered_nme(vertices, triangles, landmarks, moved, triangles, moved[landmarks[30]]) < 0.05


def test_another_identity_scores_in_proportion_to_its_distance(face):
    vertices, triangles, landmarks = face
    other = random_face_mm(seed=6)[0]
    nme = rendered_nme(other, triangles, landmarks, vertices, triangles)
    # Two random SFM identities differ by about 1-3 mm over the face; an outer interocular distance is ~95 mm.
    assert 0.5 < nme < 4.0
    # Half way between the two identities: every distance about halves.
    halfway = rendered_nme((vertices + other) / 2, triangles, landmarks, vertices, triangles)
    assert halfway == pytest.approx(nme / 2, rel=0.2)


def test_positive_yaw_turns_the_face_toward_the_image_right(face):
    vertices, triangles, landmarks = face
    colours = np.full((len(vertices), 3), 0.7)
    nose = np.linalg.norm(vertices - vertices[landmarks[30]], axis=1) < 8
    colours[nose] = [1.0, 0.0, 0.0]
    columns = {}
    for yaw in (-40, 0, 40):
        image = render_scan(vertices, triangles, colours, 0, yaw)
        red = (image[..., 0] > 200) & (image[..., 1] < 60)
        columns[yaw] = np.nonzero(red)[1].mean() / RENDER_SIZE
        face_pixels = (np.abs(image.astype(int) - round(BACKGROUND * 255)).sum(-1) > 0)
        assert 0.1 < face_pixels.mean() < 0.6  # the face fills the frame as a photo's face would
    assert columns[-40] < columns[0] - 0.05 and columns[40] > columns[0] + 0.05
    assert columns[0] == pytest.approx(0.5, abs=0.05)


def test_vertex_colours_and_textures_are_read_as_the_scan_colours(tmp_path, face):
    vertices, triangles, _ = face
    colours = np.random.default_rng(0).uniform(0, 1, (len(vertices), 3))
    trimesh.Trimesh(vertices, triangles, vertex_colors=colours, process=False).export(tmp_path / "scan.obj")
    read_vertices, read_triangles, read_colours = read_coloured_mesh(tmp_path / "scan.obj")
    assert np.allclose(read_vertices, vertices, atol=1e-6) and (read_triangles == triangles).all()
    assert np.abs(read_colours - colours).max() <= 1 / 255 + 1e-9
    trimesh.Trimesh(vertices, triangles, process=False).export(tmp_path / "plain.obj")
    assert read_coloured_mesh(tmp_path / "plain.obj")[2] is None


def test_a_textured_scan_gives_each_vertex_its_texel(tmp_path, face):
    from PIL import Image

    vertices, triangles, _ = face
    texture = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8).repeat(8, 0).repeat(8, 1))
    left = vertices[:, 0] < 0
    uv = np.stack([np.where(left, 0.25, 0.75), np.full(len(vertices), 0.5)], 1)
    visual = trimesh.visual.TextureVisuals(uv=uv, image=texture)
    trimesh.Trimesh(vertices, triangles, visual=visual, process=False).export(tmp_path / "scan.obj")
    _, _, colours = read_coloured_mesh(tmp_path / "scan.obj")
    assert np.allclose(colours[left], [1, 0, 0], atol=0.02) and np.allclose(colours[~left], [0, 0, 1], atol=0.02)
