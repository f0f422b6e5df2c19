from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from cest import assets, morphable
from cest.morphable import MorphableModel
from sample_assets import asset

# iBUG 68 index of each point's mirror image (0-based).
IBUG_FLIP = (
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)
REFLECT_X = torch.tensor([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def sfm(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(assets.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))  # builds the model, not a cached .npz
        yield morphable.load_sfm()


@pytest.fixture(scope="module")
def eos_sfm():
    import eos

    return eos.morphablemodel.load_model(str(asset("morphable/sfm/sfm_shape_3448.bin")))


def test_sfm_sizes(sfm):
    assert (sfm.n_vertices, sfm.n_identity, sfm.n_expression) == (3448, 63, 6)
    assert sfm.triangles.shape == (6736, 3) and sfm.triangles.dtype == torch.int64
    assert sfm.identity_basis.shape == (63, 3448, 3) and sfm.expression_basis.shape == (6, 3448, 3)
    assert sfm.uv.shape == (3448, 2) and sfm.landmark_indices.shape == (68,)
    assert sfm.expression_names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


def test_sfm_normalisation_matches_eos(sfm, eos_sfm):
    shape_model = eos_sfm.get_shape_model()
    mean_mm = np.asarray(shape_model.get_mean()).reshape(-1, 3)
    centre = mean_mm.mean(axis=0)
    assert sfm.mean_shape.abs()[:, 0].max().item() == pytest.approx(1.0)
    assert sfm.unit_scale_mm == pytest.approx(np.abs(mean_mm[:, 0] - centre[0]).max())
    np.testing.assert_allclose(sfm.mean_shape.numpy() * sfm.unit_scale_mm + centre, mean_mm, atol=1e-3)
    # Identity basis = orthonormal PCA basis * sqrt(eigenvalue): unit-variance coefficients.
    expected = np.asarray(shape_model.get_orthonormal_pca_basis()) * np.sqrt(shape_model.get_eigenvalues())
    np.testing.assert_allclose(
        sfm.identity_basis.numpy() * sfm.unit_scale_mm, expected.T.reshape(63, -1, 3), rtol=1e-4, atol=1e-4
    )


def test_shape_zero_coefficients_give_the_mean(sfm):
    vertices = sfm.shape(torch.zeros(2, 63), torch.zeros(2, 6))
    assert vertices.shape == (2, 3448, 3)
    assert torch.equal(vertices[0], sfm.mean_shape) and torch.equal(vertices[1], sfm.mean_shape)


def test_shape_matches_a_sum_over_components(sfm):
    generator = torch.Generator().manual_seed(0)
    alpha_id = torch.randn(3, 63, generator=generator, dtype=torch.float64)
    alpha_exp = torch.rand(3, 6, generator=generator, dtype=torch.float64)
    vertices = sfm.shape(alpha_id, alpha_exp)
    assert vertices.dtype == torch.float64
    for b in range(3):
        expected = sfm.mean_shape.double().clone()
        for k in range(63):
            expected += alpha_id[b, k] * sfm.identity_basis[k].double()
        for k in range(6):
            expected += alpha_exp[b, k] * sfm.expression_basis[k].double()
        torch.testing.assert_close(vertices[b], expected)


def test_shape_is_differentiable(sfm):
    alpha_id = torch.randn(2, 63, dtype=torch.float64, requires_grad=True)
    alpha_exp = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, e: sfm.shape(a, e)[:, :7], (alpha_id, alpha_exp))
    weights = torch.randn(2, 3448, 3, dtype=torch.float64)
    (sfm.shape(alpha_id, alpha_exp) * weights).sum().backward()
    torch.testing.assert_close(alpha_id.grad, torch.einsum("bnc,knc->bk", weights, sfm.identity_basis.double()))
    torch.testing.assert_close(alpha_exp.grad, torch.einsum("bnc,knc->bk", weights, sfm.expression_basis.double()))


def test_shape_rejects_wrong_coefficient_sizes(sfm):
    with pytest.raises(ValueError, match="alpha_id"):
        sfm.shape(torch.zeros(2, 62), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="alpha_exp"):
        sfm.shape(torch.zeros(2, 63), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="vertices"):
        sfm.landmarks(torch.zeros(1, 100, 3))


def test_axes_follow_the_contract(sfm):
    landmarks = sfm.landmarks(sfm.mean_shape[None])[0]
    # x toward the subject's left: the subject's right eye (iBUG 37-42) has negative x.
    assert landmarks[36, 0] < landmarks[39, 0] < 0 < landmarks[42, 0] < landmarks[45, 0]
    assert landmarks[30, 2] == landmarks[:, 2].max()  # nose tip closest to the camera (z toward it)
    assert landmarks[8, 1] == landmarks[:, 1].min()  # chin lowest (y up)
    assert landmarks[36:48, 1].min() > landmarks[48:68, 1].max()  # eyes above the mouth
    front_most = sfm.mean_shape[sfm.mean_shape[:, 2].argmax()]
    assert (front_most - landmarks[30]).norm() < 0.05  # the most frontal vertex is at the nose tip


def test_triangles_wind_counter_clockwise_seen_from_the_camera(sfm):
    corners = sfm.mean_shape[sfm.triangles]
    normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    front = corners[..., 2].mean(dim=1) > 0  # the front of the face, in front of the centroid
    assert (normals[front, 2] > 0).float().mean() > 0.99


def test_landmarks_in_range_and_jaw_ordered(sfm):
    assert sfm.landmark_indices.min() >= 0 and sfm.landmark_indices.max() < sfm.n_vertices
    assert len(set(sfm.landmark_indices.tolist())) == 68
    jaw = sfm.landmarks(sfm.mean_shape[None])[0, :17]
    assert (jaw[1:9, 1] < jaw[0:8, 1]).all() and (jaw[9:17, 1] > jaw[8:16, 1]).all()  # down to the chin, up again
    # From the subject's right to left below the widest part of the face (points 2 to 16).
    assert (jaw[2:16, 0] > jaw[1:15, 0]).all()
    # The mapped points of ibug_to_sfm.txt are kept.
    assert sfm.landmark_indices[30] == 114 and sfm.landmark_indices[8] == 33 and sfm.landmark_indices[36] == 177


def test_mirror_pairs(sfm):
    mirror = sfm.mirror_indices
    assert torch.equal(mirror[mirror], torch.arange(sfm.n_vertices))
    mirrored = sfm.mean_shape[mirror] * REFLECT_X
    assert (mirrored - sfm.mean_shape).norm(dim=1).max() < 0.03  # 2.2 mm
    # Agrees with eos's symmetry list of the 845 reference-shape vertices (1-based).
    lines = asset("morphable/sfm/sfm_reference_symmetry.txt").read_text().splitlines()
    reference = np.array([int(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]) - 1
    np.testing.assert_array_equal(mirror[:845].numpy(), reference)
    # Landmarks are mirror-consistent: the mirror of iBUG point i is the vertex of its mirror point.
    assert torch.equal(mirror[sfm.landmark_indices][IBUG_FLIP], sfm.landmark_indices)


def test_uv_layout(sfm):
    uv, landmarks = sfm.uv, sfm.landmark_indices
    assert uv.min() >= 0 and uv.max() <= 1
    torch.testing.assert_close(uv[sfm.mirror_indices, 0], 1 - uv[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(uv[sfm.mirror_indices, 1], uv[:, 1], atol=1e-6, rtol=0)
    # u = column fraction toward image right (subject's left); v = row fraction downward.
    assert uv[landmarks[36], 0] < 0.5 < uv[landmarks[45], 0]
    assert uv[landmarks[19], 1] < uv[landmarks[30], 1] < uv[landmarks[57], 1] < uv[landmarks[8], 1]


def test_npz_round_trip(sfm, tmp_path):
    sfm.to_npz(tmp_path / "model.npz")
    loaded = MorphableModel.from_npz(tmp_path / "model.npz")
    for name, buffer in sfm.named_buffers():
        assert torch.equal(getattr(loaded, name), buffer), name
    assert loaded.unit_scale_mm == sfm.unit_scale_mm and loaded.expression_names == sfm.expression_names


def test_load_sfm_builds_once_and_shows_the_licence_once(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    first = morphable.load_sfm()
    assert "free for use for non-commercial purposes" in capfd.readouterr().err
    assert len(list((tmp_path / "models").glob("sfm_3448_*.npz"))) == 1

    def must_not_build(*args):
        raise AssertionError("the cached .npz should have been read")

    monkeypatch.setattr(morphable, "build_sfm", must_not_build)
    second = morphable.load_sfm()
    assert "non-commercial" not in capfd.readouterr().err
    assert torch.equal(first.identity_basis, second.identity_basis)


def test_cylindrical_uv_is_symmetric_and_v_points_down():
    generator = np.random.default_rng(0)
    half = generator.normal(size=(50, 3)) * [0.5, 1.0, 0.3] + [0.5, 0.0, 0.0]
    vertices = np.concatenate([half, half * [-1, 1, 1], [[0.0, 0.2, 0.4]]])
    uv = morphable.cylindrical_uv(vertices)
    assert uv.min() >= 0 and uv.max() <= 1
    np.testing.assert_allclose(uv[50:100, 0], 1 - uv[:50, 0], atol=1e-6)
    np.testing.assert_allclose(uv[50:100, 1], uv[:50, 1], atol=1e-6)
    assert uv[100, 0] == pytest.approx(0.5)
    order = np.argsort(-vertices[:, 1])
    assert (np.diff(uv[order, 1]) >= 0).all()


# ---------------------------------------------------------------------------------------------------------
# BFM 2009 + 3DDFA converter on a small synthetic model written here


def synthetic_bfm(tmp_path: Path, drop_last_vertex: bool):
    """A mirror-symmetric 10-vertex "BFM" in micrometres, 4 identity and 3 expression components."""
    rng = np.random.default_rng(1)
    half = rng.normal(size=(5, 3)) * [30_000.0, 40_000.0, 20_000.0] + [40_000.0, 0.0, 0.0]
    mean = np.concatenate([half, half * [-1, 1, 1]])
    shape_pc = np.linalg.qr(rng.normal(size=(30, 4)))[0]
    shape_ev = np.array([[5000.0], [3000.0], [2000.0], [1000.0]])
    triangles = np.array([[1, 2, 3], [6, 7, 8], [2, 3, 10], [4, 5, 9]])  # 1-based; [2, 3, 10] uses the vertex a crop drops
    bfm = tmp_path / "01_MorphableModel.mat"
    scipy.io.savemat(
        bfm,
        {
            "shapeMU": mean.reshape(-1, 1),
            "shapePC": shape_pc,
            "shapeEV": shape_ev,
            "tl": triangles.astype(np.float64),
            "texMU": np.full((30, 1), 128.0),
        },
    )
    keep = np.arange(9) if drop_last_vertex else np.arange(10)
    w_exp = rng.normal(size=(3 * keep.size, 3)) * 1000.0
    mu_exp = rng.normal(size=(3 * keep.size, 1)) * 100.0
    expression = tmp_path / "Model_Expression.mat"
    scipy.io.savemat(expression, {"w_exp": w_exp, "mu_exp": mu_exp})
    landmarks = np.arange(68) % keep.size
    landmarks_mat = tmp_path / "keypoints.mat"
    scipy.io.savemat(landmarks_mat, {"keypoints": (landmarks + 1).reshape(1, -1).astype(np.float64)})
    landmarks_txt = tmp_path / "keypoints.txt"
    np.savetxt(landmarks_txt, landmarks, fmt="%d")
    index = tmp_path / "BFM_exp_idx.mat"
    scipy.io.savemat(index, {"trimIndex": (keep + 1).reshape(-1, 1).astype(np.float64)})
    source = dict(
        mean=mean, shape_pc=shape_pc, shape_ev=shape_ev.ravel(), triangles=triangles - 1, keep=keep,
        w_exp=w_exp, mu_exp=mu_exp, landmarks=landmarks,
    )
    return bfm, expression, landmarks_mat, landmarks_txt, index, source


def reference_vertices_mm(source, alpha_id, alpha_exp):
    """The BFM/3DDFA model equation, written out directly, in millimetres."""
    keep = source["keep"]
    full = source["mean"].reshape(-1) + source["shape_pc"] @ (alpha_id * source["shape_ev"])
    trimmed = full.reshape(-1, 3)[keep].reshape(-1)
    return (trimmed + source["mu_exp"].ravel() + source["w_exp"] @ alpha_exp).reshape(-1, 3) / 1000.0


@pytest.mark.parametrize("drop_last_vertex", [False, True])
def test_convert_bfm2009(tmp_path, drop_last_vertex):
    bfm, expression, landmarks_mat, landmarks_txt, index, source = synthetic_bfm(tmp_path, drop_last_vertex)
    model = morphable.convert_bfm2009(
        bfm, expression, landmarks_mat, tmp_path / "bfm.npz", index if drop_last_vertex else None
    )
    n = source["keep"].size
    assert (model.n_vertices, model.n_identity, model.n_expression) == (n, 4, 3)

    rng = np.random.default_rng(2)
    alpha_id, alpha_exp = rng.normal(size=4), rng.normal(size=3)
    vertices = model.shape(torch.tensor(alpha_id)[None], torch.tensor(alpha_exp)[None])[0].numpy()
    centre_mm = reference_vertices_mm(source, np.zeros(4), np.zeros(3)).mean(axis=0)
    np.testing.assert_allclose(
        vertices * model.unit_scale_mm + centre_mm, reference_vertices_mm(source, alpha_id, alpha_exp), atol=1e-4
    )
    assert model.mean_shape[:, 0].abs().max().item() == pytest.approx(1.0)

    # Triangles: those whose corners are all kept, renumbered.
    new_index = {old: new for new, old in enumerate(source["keep"])}
    expected = [[new_index[v] for v in tri] for tri in source["triangles"] if all(v in new_index for v in tri)]
    assert sorted(map(sorted, model.triangles.tolist())) == sorted(map(sorted, expected))
    assert model.landmark_indices.tolist() == source["landmarks"].tolist()
    assert model.uv.min() >= 0 and model.uv.max() <= 1

    loaded = MorphableModel.from_npz(tmp_path / "bfm.npz")
    for name, buffer in model.named_buffers():
        assert torch.equal(getattr(loaded, name), buffer), name
    assert loaded.unit_scale_mm == model.unit_scale_mm


def test_triangles_are_wound_toward_the_camera():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.5]])
    counter_clockwise = np.array([[0, 1, 2], [1, 3, 2]])  # seen from +z
    np.testing.assert_array_equal(morphable.wind_toward_camera(vertices, counter_clockwise), counter_clockwise)
    clockwise = counter_clockwise[:, [1, 0, 2]]
    np.testing.assert_array_equal(morphable.wind_toward_camera(vertices, clockwise), clockwise[:, [0, 2, 1]])


def test_convert_bfm2009_mirror_pairs_of_a_symmetric_mesh(tmp_path):
    bfm, expression, landmarks_mat, _, _, source = synthetic_bfm(tmp_path, drop_last_vertex=False)
    scipy.io.savemat(expression, {"w_exp": np.zeros((30, 2))})  # no mu_exp: the mean stays symmetric
    model = morphable.convert_bfm2009(bfm, expression, landmarks_mat, tmp_path / "bfm.npz")
    assert model.mirror_indices.tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    torch.testing.assert_close(model.uv[model.mirror_indices, 0], 1 - model.uv[:, 0])


def test_convert_bfm_command_line(tmp_path, capsys):
    bfm, expression, _, landmarks_txt, _, source = synthetic_bfm(tmp_path, drop_last_vertex=False)
    output = tmp_path / "out" / "model.npz"
    morphable.main(
        ["convert-bfm", "--bfm", str(bfm), "--exp", str(expression), "--landmarks", str(landmarks_txt),
         "--output", str(output)]
    )
    assert "10 vertices, 4 identity, 3 expression components" in capsys.readouterr().out
    assert MorphableModel.from_npz(output).landmark_indices.tolist() == source["landmarks"].tolist()


def test_convert_bfm2009_clear_errors(tmp_path):
    bfm, expression, landmarks_mat, landmarks_txt, _, _ = synthetic_bfm(tmp_path, drop_last_vertex=True)
    with pytest.raises(ValueError, match="expression basis has 9 vertices, BFM has 10"):
        morphable.convert_bfm2009(bfm, expression, landmarks_mat, tmp_path / "x.npz")
    scipy.io.savemat(expression, {"not_w_exp": np.zeros((3, 1))})
    with pytest.raises(ValueError, match="w_exp"):
        morphable.convert_bfm2009(bfm, expression, landmarks_mat, tmp_path / "x.npz")
    scipy.io.savemat(expression, {"w_exp": np.zeros((30, 1))})
    np.savetxt(landmarks_txt, np.full(68, 10), fmt="%d")
    with pytest.raises(ValueError, match="indices outside"):
        morphable.convert_bfm2009(bfm, expression, landmarks_txt, tmp_path / "x.npz")
