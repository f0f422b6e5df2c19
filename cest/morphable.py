"""Linear 3D morphable face model: mean shape + identity basis + expression basis, and its asset loaders.

Model space (shared contract): centred, normalised units in which the mean face's half-width max|x| is 1,
x toward the subject's left (image right in a frontal view), y up, z toward the camera. Multiplying by
`unit_scale_mm` gives millimetres (centred on the mean shape's centroid; the source centre is not kept).

Models are stored in the project's own .npz format (`MorphableModel.to_npz` / `from_npz`):
  mean_shape (N,3) f32, identity_basis (K_id,N,3) f32, expression_basis (K_exp,N,3) f32,
  triangles (F,3) i64, uv (N,2) f32, landmark_indices (68,) i64, mirror_indices (N,) i64,
  unit_scale_mm () f64, expression_names (K_exp,) str, format_version () i64.

Sources:
- `load_sfm()`: the Surrey Face Model (3,448 vertices, 63 identity components, 6 expression blendshapes),
  read with eos-py from the asset registry and cached as .npz in the user cache directory.
- `convert_bfm2009(...)` / `python -m cest.morphable convert-bfm`: the Basel Face Model 2009 plus the
  3DDFA expression basis (what the CEST paper used), for users who hold those files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

import numpy as np
import scipy.io
import torch
from scipy.spatial import cKDTree

from cest import assets

FORMAT_VERSION = 1
N_LANDMARKS = 68

SFM_LICENCE_NOTICE = (
    "cest: using the Surrey Face Model (sfm_shape_3448.bin, from https://github.com/patrikhuber/eos). "
    "The 3D morphable face model is free for use for non-commercial purposes. For commercial purposes "
    "and to obtain other model resolutions, see http://www.cvssp.org/facemodel."
)

_SFM_DIR = "morphable/sfm/"
_SFM_SOURCES = tuple(
    _SFM_DIR + name
    for name in ("sfm_shape_3448.bin", "expression_blendshapes_3448.bin", "ibug_to_sfm.txt", "sfm_model_contours.json")
)


class MorphableModel(torch.nn.Module):
    """A linear face model; all geometry lives in buffers so `.to(device)` moves it."""

    def __init__(
        self,
        mean_shape,
        identity_basis,
        expression_basis,
        triangles,
        uv,
        landmark_indices,
        mirror_indices,
        unit_scale_mm: float,
        expression_names=(),
    ):
        super().__init__()
        mean_shape = torch.as_tensor(np.asarray(mean_shape), dtype=torch.float32)
        n = mean_shape.shape[0]
        _check_shape("mean_shape", mean_shape, (n, 3))
        identity_basis = torch.as_tensor(np.asarray(identity_basis), dtype=torch.float32)
        _check_shape("identity_basis", identity_basis, (identity_basis.shape[0], n, 3))
        expression_basis = torch.as_tensor(np.asarray(expression_basis), dtype=torch.float32)
        _check_shape("expression_basis", expression_basis, (expression_basis.shape[0], n, 3))
        triangles = torch.as_tensor(np.asarray(triangles), dtype=torch.int64)
        _check_shape("triangles", triangles, (triangles.shape[0], 3))
        _check_indices("triangles", triangles, n)
        uv = torch.as_tensor(np.asarray(uv), dtype=torch.float32)
        _check_shape("uv", uv, (n, 2))
        landmark_indices = torch.as_tensor(np.asarray(landmark_indices), dtype=torch.int64)
        _check_shape("landmark_indices", landmark_indices, (N_LANDMARKS,))
        _check_indices("landmark_indices", landmark_indices, n)
        mirror_indices = torch.as_tensor(np.asarray(mirror_indices), dtype=torch.int64)
        _check_shape("mirror_indices", mirror_indices, (n,))
        _check_indices("mirror_indices", mirror_indices, n)
        expression_names = [str(name) for name in expression_names]
        if expression_names and len(expression_names) != expression_basis.shape[0]:
            raise ValueError(f"{len(expression_names)} expression names for {expression_basis.shape[0]} components")

        # Not persistent: a checkpoint of a network that holds this model must not carry (and redistribute)
        # the morphable model, whose licence may forbid that; the model comes from its own .npz.
        for name, value in [("mean_shape", mean_shape), ("identity_basis", identity_basis),
                            ("expression_basis", expression_basis), ("triangles", triangles), ("uv", uv),
                            ("landmark_indices", landmark_indices), ("mirror_indices", mirror_indices)]:
            self.register_buffer(name, value, persistent=False)
        self.unit_scale_mm = float(unit_scale_mm)
        self.expression_names = expression_names

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def n_identity(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def n_expression(self) -> int:
        return self.expression_basis.shape[0]

    def shape(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
        """Vertices (B,N,3) = mean + sum_k alpha_id[:,k] identity_basis[k] + sum_k alpha_exp[:,k] expression_basis[k]."""
        if alpha_id.ndim != 2 or alpha_id.shape[1] != self.n_identity:
            raise ValueError(f"alpha_id must be (B, {self.n_identity}), got {tuple(alpha_id.shape)}")
        if alpha_exp.ndim != 2 or alpha_exp.shape != (alpha_id.shape[0], self.n_expression):
            raise ValueError(f"alpha_exp must be ({alpha_id.shape[0]}, {self.n_expression}), got {tuple(alpha_exp.shape)}")
        dtype = torch.promote_types(alpha_id.dtype, alpha_exp.dtype)
        offsets = alpha_id.to(dtype) @ self.identity_basis.to(dtype).flatten(1)
        offsets = offsets + alpha_exp.to(dtype) @ self.expression_basis.to(dtype).flatten(1)
        return self.mean_shape.to(dtype) + offsets.view(-1, self.n_vertices, 3)

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """The 68 iBUG landmarks (B,68,3) of vertices (B,N,3)."""
        if vertices.ndim != 3 or vertices.shape[1] != self.n_vertices:
            raise ValueError(f"vertices must be (B, {self.n_vertices}, C), got {tuple(vertices.shape)}")
        return vertices[:, self.landmark_indices]

    def to_npz(self, path: str | os.PathLike) -> None:
        """Write the model in the project's .npz format (atomically: a partial file is never left at `path`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.partial")
        with open(partial, "wb") as stream:
            np.savez(
                stream,
                format_version=np.int64(FORMAT_VERSION),
                mean_shape=self.mean_shape.cpu().numpy(),
                identity_basis=self.identity_basis.cpu().numpy(),
                expression_basis=self.expression_basis.cpu().numpy(),
                triangles=self.triangles.cpu().numpy(),
                uv=self.uv.cpu().numpy(),
                landmark_indices=self.landmark_indices.cpu().numpy(),
                mirror_indices=self.mirror_indices.cpu().numpy(),
                unit_scale_mm=np.float64(self.unit_scale_mm),
                expression_names=np.array(self.expression_names, dtype=str),
            )
        os.replace(partial, path)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> "MorphableModel":
        """Load a model written by `to_npz` (e.g. by `load_sfm` or the BFM converter)."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"]) if "format_version" in data else None
            if version != FORMAT_VERSION:
                raise ValueError(f"{path}: model format version {version}, this code reads {FORMAT_VERSION}")
            return cls(
                mean_shape=data["mean_shape"],
                identity_basis=data["identity_basis"],
                expression_basis=data["expression_basis"],
                triangles=data["triangles"],
                uv=data["uv"],
                landmark_indices=data["landmark_indices"],
                mirror_indices=data["mirror_indices"],
                unit_scale_mm=float(data["unit_scale_mm"]),
                expression_names=data["expression_names"].tolist(),
            )


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


def _check_indices(name: str, indices: torch.Tensor, n_vertices: int) -> None:
    if indices.numel() and (indices.min() < 0 or indices.max() >= n_vertices):
        raise ValueError(f"{name} must index vertices in [0, {n_vertices}), got [{indices.min()}, {indices.max()}]")


# ---------------------------------------------------------------------------------------------------------
# Geometry helpers usable for any model


def normalisation(mean_shape_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (the mean shape's centroid) and scale (its half-width max|x - centre_x|) in source units."""
    centre = mean_shape_mm.mean(axis=0)
    scale = float(np.abs(mean_shape_mm[:, 0] - centre[0]).max())
    return centre, scale


def cylindrical_uv(vertices: np.ndarray) -> np.ndarray:
    """UV coordinates (N,2) by unwrapping `vertices` (N,3, model axes) around a vertical cylinder.

    The cylinder axis is the vertical line x = 0 (the face's symmetry plane in a centred model) at the
    middle of the depth range, so u follows the angle around the face and v the height:
    u = 0.5 + angle / (2 max|angle|) (u -> 1 - u under x -> -x), v = (y_max - y) / (y_max - y_min)
    (row fraction, v down), both in [0, 1].
    """
    z_axis = 0.5 * (vertices[:, 2].min() + vertices[:, 2].max())
    angle = np.arctan2(vertices[:, 0], vertices[:, 2] - z_axis)
    u = 0.5 + angle / (2.0 * np.abs(angle).max())
    y = vertices[:, 1]
    v = (y.max() - y) / (y.max() - y.min())
    return np.stack([u, v], axis=1).astype(np.float32)


def mirror_indices_from_uv(uv: np.ndarray, tolerance: float = 1e-5) -> np.ndarray:
    """Vertex mirror pairs of an exactly mirror-symmetric UV layout: the vertex at (1 - u, v)."""
    distance, index = cKDTree(uv).query(np.stack([1.0 - uv[:, 0], uv[:, 1]], axis=1))
    if distance.max() > tolerance:
        raise ValueError(f"UV layout is not mirror-symmetric (largest mismatch {distance.max():.3g})")
    return index.astype(np.int64)


def mirror_indices_from_shape(vertices: np.ndarray) -> np.ndarray:
    """Vertex mirror pairs by nearest neighbour of the x-reflected shape (centred at x = 0).

    Exact for a symmetric mesh; for an approximately symmetric one a pair may not be mutual.
    """
    _, index = cKDTree(vertices).query(vertices * np.array([-1.0, 1.0, 1.0]))
    return index.astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Surrey Face Model


def load_sfm() -> MorphableModel:
    """The Surrey Face Model in model space, built from the asset registry once and then read from .npz."""
    key = hashlib.sha256(
        "".join(assets.REGISTRY[name].sha256 for name in _SFM_SOURCES).encode() + str(FORMAT_VERSION).encode()
    ).hexdigest()[:16]
    cached = assets.cache_dir() / "models" / f"sfm_3448_{key}.npz"
    if cached.is_file():
        return MorphableModel.from_npz(cached)
    model = build_sfm(*(assets.fetch(name) for name in _SFM_SOURCES))
    model.to_npz(cached)
    print(SFM_LICENCE_NOTICE, file=sys.stderr)
    return model


def build_sfm(shape_bin: Path, blendshapes_bin: Path, ibug_mapping: Path, contours_json: Path) -> MorphableModel:
    """Read the SFM with eos-py and convert it to model space.

    eos gives the mean and bases in millimetres with x toward the subject's left, y up, z toward the
    viewer (the nose tip has the largest z), which is already the contract's axis convention, and UV
    coordinates with u increasing toward the subject's left and v increasing downward (the chin has a
    larger v than the forehead), which is the contract's UV convention, so only units change.
    """
    import eos  # imported here: only needed to build the cache

    eos_model = eos.morphablemodel.load_model(str(shape_bin))
    shape_model = eos_model.get_shape_model()
    mean_mm = np.asarray(shape_model.get_mean(), dtype=np.float64).reshape(-1, 3)
    n = mean_mm.shape[0]
    # The rescaled basis is the orthonormal basis times sqrt(eigenvalue): coefficients ~ N(0, 1).
    identity_mm = np.asarray(shape_model.get_rescaled_pca_basis(), dtype=np.float64).T.reshape(-1, n, 3)
    blendshapes = eos.morphablemodel.load_blendshapes(str(blendshapes_bin))
    expression_mm = np.stack([np.asarray(b.deformation, dtype=np.float64).reshape(n, 3) for b in blendshapes])
    triangles = np.asarray(shape_model.get_triangle_list(), dtype=np.int64)
    uv = np.asarray(eos_model.get_texture_coordinates(), dtype=np.float32)

    centre, scale = normalisation(mean_mm)
    mean = (mean_mm - centre) / scale
    return MorphableModel(
        mean_shape=mean,
        identity_basis=identity_mm / scale,
        expression_basis=expression_mm / scale,
        triangles=triangles,
        uv=uv,
        landmark_indices=sfm_landmark_indices(mean, ibug_mapping, contours_json),
        mirror_indices=mirror_indices_from_uv(uv),
        unit_scale_mm=scale,
        expression_names=[b.name for b in blendshapes],
    )


def sfm_landmark_indices(mean_shape: np.ndarray, ibug_mapping: Path, contours_json: Path) -> np.ndarray:
    """68 iBUG landmark vertices of the SFM (0-based iBUG order).

    ibug_to_sfm.txt maps 50 points. The rest are chosen here, for a frontal view:
    - jaw contour 1-8 and 10-17: the 2D jaw silhouette depends on the head pose (eos re-selects contour
      vertices per fit); we fix the frontal choice. Along each of the contour file's vertex chains
      (temple to chin) followed by the chin vertex (iBUG 9), point 1 (resp. 17) is the chain vertex at
      the height of the outer eye corners and points 2-8 (16-10) are the chain vertices nearest to
      equal steps of frontal (x, y) arc length from there to the chin.
    - inner mouth corners 61 and 65 (not in the mapping): the vertex nearest to the mean of the mouth
      corner and the two adjacent inner-lip points (49, 62, 68 and 55, 64, 66).
    """
    mapping = tomllib.loads(Path(ibug_mapping).read_text())["landmark_mappings"]
    indices = np.full(N_LANDMARKS, -1, dtype=np.int64)
    for ibug_number, vertex in mapping.items():
        indices[int(ibug_number) - 1] = int(vertex)
    contours = json.loads(Path(contours_json).read_text())["model_contour"]
    eye_height = mean_shape[indices[[36, 45]], 1].mean()
    chin = indices[8]
    indices[0:8] = _frontal_contour(mean_shape, contours["right_contour"], chin, eye_height)
    indices[9:17] = _frontal_contour(mean_shape, contours["left_contour"], chin, eye_height)[::-1]
    tree = cKDTree(mean_shape)
    for inner_corner, neighbours in ((60, (48, 61, 67)), (64, (54, 63, 65))):
        indices[inner_corner] = tree.query(mean_shape[indices[list(neighbours)]].mean(axis=0))[1]
    if (indices < 0).any():
        raise ValueError(f"{ibug_mapping}: no vertex for iBUG points {np.nonzero(indices < 0)[0] + 1}")
    return indices


def _frontal_contour(mean_shape: np.ndarray, chain: list[int], chin: int, eye_height: float) -> np.ndarray:
    chain = np.asarray(chain, dtype=np.int64)
    start = int(np.argmin(np.abs(mean_shape[chain, 1] - eye_height)))
    path = np.append(chain[start:], chin)
    steps = np.linalg.norm(np.diff(mean_shape[path, :2], axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    targets = arc[-1] * np.arange(8) / 8
    picked = path[np.abs(arc[None, :] - targets[:, None]).argmin(axis=1)]
    if len(set(picked.tolist())) != 8:
        raise ValueError("contour chain too short for 8 distinct jaw landmarks")
    return picked


# ---------------------------------------------------------------------------------------------------------
# Basel Face Model 2009 + 3DDFA expression basis


def convert_bfm2009(
    bfm_mat: str | os.PathLike,
    expression_mat: str | os.PathLike,
    landmarks: str | os.PathLike,
    output_npz: str | os.PathLike,
    expression_vertices: str | os.PathLike | None = None,
) -> MorphableModel:
    """Convert the BFM 2009 plus the 3DDFA expression basis to the project's .npz format.

    bfm_mat: 01_MorphableModel.mat with shapeMU (3N,1), shapePC (3N,K), shapeEV (K,1) and tl (F,3)
      (1-based). Units are micrometres; shapeEV holds standard deviations (the BFM's own sampling is
      shapeMU + shapePC * (alpha .* shapeEV)), so identity_basis = shapePC * shapeEV gives N(0,1)
      coefficients. Axes are the contract's (x to the subject's left, y up, z toward the viewer).
    expression_mat: 3DDFA's Model_Expression.mat with w_exp (3M,K_exp) and optionally mu_exp (3M,1), in
      the BFM's units and frame. w_exp is kept unscaled, so the coefficients are 3DDFA's Exp_Para (as in
      AFLW2000-3D); mu_exp (3DDFA's mean expression offset) is added to the mean shape.
    expression_vertices: needed when M != N: the BFM vertex of each of the M expression-basis vertices
      (3DDFA crops the BFM to 53,215 vertices; e.g. BFM_exp_idx.mat's trimIndex). The output model keeps
      those M vertices and the triangles whose three corners are kept.
    landmarks: 68 vertex indices of the output model in iBUG order (e.g. 3DDFA's keypoints).
    Index files: .mat files hold MATLAB 1-based indices (variable trimIndex / keypoints);
    .txt/.npy files hold 0-based indices.
    Triangles are re-wound if needed so that they run counter-clockwise seen from the camera
    (`wind_toward_camera`; the BFM's own tl runs the other way).
    UV coordinates: the BFM has none; the mean shape is unwrapped on a cylinder (`cylindrical_uv`), as
    in the paper. Mirror pairs: nearest neighbour of the reflected mean shape.
    """
    bfm = scipy.io.loadmat(bfm_mat)
    for key in ("shapeMU", "shapePC", "shapeEV", "tl"):
        if key not in bfm:
            raise ValueError(f"{bfm_mat}: missing variable {key!r} (expected a BFM 2009 01_MorphableModel.mat)")
    mean_um = np.asarray(bfm["shapeMU"], dtype=np.float64).reshape(-1, 3)
    n_bfm = mean_um.shape[0]
    shape_pc = np.asarray(bfm["shapePC"], dtype=np.float64)
    shape_ev = np.asarray(bfm["shapeEV"], dtype=np.float64).reshape(-1)
    if shape_pc.shape != (3 * n_bfm, shape_ev.size):
        raise ValueError(f"{bfm_mat}: shapePC {shape_pc.shape} does not match shapeMU/shapeEV")
    identity_um = (shape_pc * shape_ev).T.reshape(-1, n_bfm, 3)
    triangles = np.asarray(bfm["tl"], dtype=np.int64) - 1

    exp = scipy.io.loadmat(expression_mat)
    if "w_exp" not in exp:
        raise ValueError(f"{expression_mat}: missing variable 'w_exp' (expected 3DDFA's Model_Expression.mat)")
    w_exp = np.asarray(exp["w_exp"], dtype=np.float64)
    n_exp = w_exp.shape[0] // 3
    expression_um = w_exp.T.reshape(-1, n_exp, 3)
    mu_exp = np.asarray(exp["mu_exp"], dtype=np.float64).reshape(n_exp, 3) if "mu_exp" in exp else 0.0

    if expression_vertices is not None:
        keep = _read_indices(expression_vertices, "trimIndex", n_bfm)
    elif n_exp == n_bfm:
        keep = np.arange(n_bfm)
    else:
        raise ValueError(
            f"expression basis has {n_exp} vertices, BFM has {n_bfm}: pass expression_vertices "
            "(the BFM vertex of each expression-basis vertex, e.g. BFM_exp_idx.mat)"
        )
    if keep.size != n_exp:
        raise ValueError(f"{expression_vertices}: {keep.size} indices for {n_exp} expression-basis vertices")
    mean_um = mean_um[keep] + mu_exp
    identity_um = identity_um[:, keep]
    triangles = _restrict_triangles(triangles, keep, n_bfm)

    centre, scale_um = normalisation(mean_um)
    mean = (mean_um - centre) / scale_um
    model = MorphableModel(
        mean_shape=mean,
        identity_basis=identity_um / scale_um,
        expression_basis=expression_um / scale_um,
        triangles=wind_toward_camera(mean, triangles),
        uv=cylindrical_uv(mean),
        landmark_indices=_read_indices(landmarks, "keypoints", n_exp),
        mirror_indices=mirror_indices_from_shape(mean),
        unit_scale_mm=scale_um / 1000.0,
    )
    model.to_npz(output_npz)
    return model


def wind_toward_camera(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Triangles ordered counter-clockwise seen from +z (the SFM's and OpenGL's front faces).

    A face mask opens backwards, so its outward normals sum toward the camera; if they sum away from
    it the whole mesh is wound the other way round (as the BFM 2009's tl is) and every triangle is flipped.
    """
    corners = vertices[triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return triangles if normals[:, 2].sum() >= 0 else triangles[:, [0, 2, 1]]


def _restrict_triangles(triangles: np.ndarray, keep: np.ndarray, n_vertices: int) -> np.ndarray:
    new_index = np.full(n_vertices, -1, dtype=np.int64)
    new_index[keep] = np.arange(keep.size)
    remapped = new_index[triangles]
    return remapped[(remapped >= 0).all(axis=1)]


def _read_indices(path: str | os.PathLike, mat_variable: str, n_vertices: int) -> np.ndarray:
    path = Path(path)
    if path.suffix == ".mat":
        data = scipy.io.loadmat(path)
        if mat_variable not in data:
            raise ValueError(f"{path}: missing variable {mat_variable!r}")
        indices = np.asarray(data[mat_variable]).reshape(-1).astype(np.int64) - 1
    elif path.suffix == ".npy":
        indices = np.load(path).reshape(-1).astype(np.int64)
    else:
        indices = np.loadtxt(path, dtype=np.int64, comments="#").reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= n_vertices):
        raise ValueError(f"{path}: indices outside [0, {n_vertices}) (.mat: 1-based; .txt/.npy: 0-based)")
    return indices


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cest.morphable", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-bfm", help="convert BFM 2009 + 3DDFA expressions to .npz")
    convert.add_argument("--bfm", required=True, help="01_MorphableModel.mat")
    convert.add_argument("--exp", required=True, help="3DDFA Model_Expression.mat (w_exp, mu_exp)")
    convert.add_argument("--landmarks", required=True, help="68 iBUG vertex indices (.mat keypoints 1-based, .txt 0-based)")
    convert.add_argument("--expression-vertices", help="BFM vertex of each expression vertex (.mat trimIndex, .txt)")
    convert.add_argument("--output", required=True, help="output .npz")
    args = parser.parse_args(argv)
    model = convert_bfm2009(args.bfm, args.exp, args.landmarks, args.output, args.expression_vertices)
    print(
        f"wrote {args.output}: {model.n_vertices} vertices, {model.n_identity} identity, "
        f"{model.n_expression} expression components, {model.triangles.shape[0]} triangles"
    )


if __name__ == "__main__":
    main()
