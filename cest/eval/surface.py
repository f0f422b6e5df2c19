"""Surface geometry shared by the shape benchmarks (MICC Florence, NoW, REALY): exact point-to-surface distance,
similarity alignment (Umeyama), ICP with isotropic scale onto a surface, and spherical crops.

- `closest_points(points, vertices, triangles)`: for each query point the closest point on the triangle mesh
  (not the nearest vertex: a scan is far denser than a 3,448-vertex model, so vertex distances would mostly
  measure the model's vertex spacing). Exact: candidate triangles come from k-d trees of triangle centroids
  (one per size class), and k grows until no triangle outside the candidates can be closer (its centroid is
  farther than the best distance plus its class's largest centroid-to-corner radius).
- `closest_on_triangles`: the closest point of one triangle per query (Ericson, Real-Time Collision Detection,
  Sec. 5.1.5: Voronoi regions of the corners, edges and face), returned as barycentric weights.
- `similarity_transform(source, target)`: the least-squares s, R, t with s R source + t ~ target (Umeyama 1991;
  rotations only, never a reflection).
- `align_to_surface(vertices, triangles, points)`: ICP (Besl and McKay) of a mesh onto points, minimising the
  sum over the points of the squared distance to the moved surface (the objective of now_evaluation's rigid
  scan-to-mesh refinement); each step pairs every point with its closest surface point, fixed by barycentric
  weights on the unmoved mesh, and solves the similarity from the unmoved mesh, so the objective never rises.
- `crop_sphere`: the vertices within a radius of a centre and the triangles whose three corners stay.

Shapes: points (P, 3), vertices (N, 3), triangles (F, 3) int, barycentric (P, 3); float64 in the data's units.
"""

import numpy as np
from scipy.spatial import cKDTree

ICP_ITERATIONS = 100  # at most; stops when a step moves the mesh by less than ICP_TOLERANCE (RMS, data units)
ICP_TOLERANCE = 1e-5
_CHUNK = 20000  # query points per batch of candidate tests (bounds the (chunk, k, 3, 3) temporaries)


def closest_on_triangles(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric weights (..., 3) of the point of each triangle corners (..., 3, 3) closest to points (..., 3)."""
    a, b, c = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    ab, ac = b - a, c - a
    d1, d2 = _dot(ab, points - a), _dot(ac, points - a)
    d3, d4 = _dot(ab, points - b), _dot(ac, points - b)
    d5, d6 = _dot(ab, points - c), _dot(ac, points - c)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        on_ab = d1 / (d1 - d3)
        on_ac = d2 / (d2 - d6)
        on_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        total = va + vb + vc
        inside_b, inside_c = vb / total, vc / total
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    # Ericson's order: corner A, corner B, edge AB, corner C, edge AC, edge BC, else the face.
    regions = [
        (d1 <= 0) & (d2 <= 0),
        (d3 >= 0) & (d4 <= d3),
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),
        (d6 >= 0) & (d5 <= d6),
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),
        (va <= 0) & (d4 >= d3) & (d5 >= d6),
    ]
    weights_b = np.select(regions, [zero, one, on_ab, zero, zero, 1 - on_bc], inside_b)
    weights_c = np.select(regions, [zero, zero, zero, one, on_ac, on_bc], inside_c)
    return np.stack([1 - weights_b - weights_c, weights_b, weights_c], axis=-1)


def closest_points(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray, k: int = 8
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest surface points: (distances (P,), triangle index (P,), barycentric weights (P, 3))."""
    points, vertices = np.asarray(points, np.float64), np.asarray(vertices, np.float64)
    triangles = np.asarray(triangles, np.int64)
    corners = vertices[triangles]
    # Zero-area triangles have no face and no Voronoi regions; they are skipped (as now_evaluation's
    # clean_degenerated_faces); their edges belong to the triangles around them.
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    valid = np.flatnonzero(area > 0)
    if len(valid) == 0:
        raise ValueError("closest_points: the mesh has no triangles of non-zero area")
    reach = np.linalg.norm(corners[valid] - corners[valid].mean(1, keepdims=True), axis=-1).max(1)
    distances = np.full(len(points), np.inf)
    triangle_ids = np.zeros(len(points), np.int64)
    weights = np.zeros((len(points), 3))
    # Triangles grouped by size (powers of two of their reach): one large triangle would otherwise force
    # every query to look far.
    size_class = np.floor(np.log2(reach / reach.min())).astype(np.int64)
    for group in np.unique(size_class):
        members = valid[size_class == group]
        _search(points, corners[members], members, float(reach[size_class == group].max()), k,
                distances, triangle_ids, weights)
    return distances, triangle_ids, weights


def _search(points, corners, members, reach, k, distances, triangle_ids, weights) -> None:
    """Improve distances/triangle_ids/weights (in place) with the triangles `members` (corners (G, 3, 3)).
    A query is settled when every triangle left out has its centroid farther than its best distance plus
    `reach` (the group's largest centroid-to-corner distance); k grows until all are settled."""
    tree = cKDTree(corners.mean(1))
    pending = np.arange(len(points))
    while len(pending):
        count = min(k, len(corners))
        unsettled = []
        for start in range(0, len(pending), _CHUNK):
            rows = pending[start:start + _CHUNK]
            centroid_distance, candidates = tree.query(points[rows], count)
            candidates = np.asarray(candidates).reshape(len(rows), count)
            bary = closest_on_triangles(points[rows, None], corners[candidates])
            found = np.linalg.norm(np.einsum("pkj,pkjd->pkd", bary, corners[candidates]) - points[rows, None], axis=-1)
            best = found.argmin(1)
            pick = np.arange(len(rows))
            better = found[pick, best] < distances[rows]
            distances[rows[better]] = found[pick, best][better]
            triangle_ids[rows[better]] = members[candidates[pick, best]][better]
            weights[rows[better]] = bary[pick, best][better]
            farthest = np.asarray(centroid_distance).reshape(len(rows), count)[:, -1]
            unsettled.append(rows[(count < len(corners)) & (farthest - reach < distances[rows])])
        pending = np.concatenate(unsettled)
        k *= 4


def surface_points(vertices: np.ndarray, triangles: np.ndarray, triangle_ids: np.ndarray,
                   weights: np.ndarray) -> np.ndarray:
    """Points (P, 3) given by triangle index and barycentric weights on a mesh."""
    return np.einsum("pj,pjd->pd", weights, np.asarray(vertices, np.float64)[np.asarray(triangles)[triangle_ids]])


def similarity_transform(source: np.ndarray, target: np.ndarray, scale: bool = True
                         ) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising sum |s R source_i + t - target_i|^2 over paired points (K, 3) (Umeyama 1991)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    centre_s, centre_t = source.mean(0), target.mean(0)
    centred_s, centred_t = source - centre_s, target - centre_t
    u, sigma, vt = np.linalg.svd(centred_t.T @ centred_s / len(source))
    signs = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    factor = float((sigma * signs).sum() / (centred_s ** 2).sum(1).mean()) if scale else 1.0
    return factor, rotation, centre_t - factor * rotation @ centre_s


def apply(transform: tuple[float, np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    scale, rotation, translation = transform
    return scale * np.asarray(points, np.float64) @ rotation.T + translation


def align_to_surface(vertices: np.ndarray, triangles: np.ndarray, points: np.ndarray, scale: bool = True,
                     iterations: int = ICP_ITERATIONS, tolerance: float = ICP_TOLERANCE
                     ) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) moving the mesh onto `points` by ICP, minimising sum_i dist(points_i, moved surface)^2.

    Each step is a Gauss-Newton step of that sum (point-to-plane: each distance linearised along the line
    from its point to its closest surface point); a step that would raise the sum is replaced by the
    point-to-point step (Umeyama on the closest-point pairs), which never does."""
    vertices = np.asarray(vertices, np.float64)
    transform = (1.0, np.eye(3), np.zeros(3))
    moved = vertices
    pairs = closest_points(points, moved, triangles)
    for _ in range(iterations):
        candidate = compose(_plane_step(points, moved, triangles, pairs, scale), transform)
        candidate_pairs = closest_points(points, apply(candidate, vertices), triangles)
        if (candidate_pairs[0] ** 2).sum() > (pairs[0] ** 2).sum():
            paired = surface_points(vertices, triangles, pairs[1], pairs[2])
            candidate = similarity_transform(paired, points, scale)
            candidate_pairs = closest_points(points, apply(candidate, vertices), triangles)
        updated = apply(candidate, vertices)
        step = float(np.sqrt(((updated - moved) ** 2).sum(1).mean()))
        transform, moved, pairs = candidate, updated, candidate_pairs
        if step < tolerance:
            break
    return transform


def _plane_step(points, moved, triangles, pairs, scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """The Gauss-Newton similarity update of the moved mesh for sum_i dist_i^2 (see align_to_surface)."""
    from scipy.spatial.transform import Rotation

    distances, triangle_ids, weights = pairs
    closest = surface_points(moved, triangles, triangle_ids, weights)
    corners = moved[triangles[triangle_ids]]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    # d(dist)/d(closest point) is the unit vector from the point to its closest point; on the surface
    # (distance 0) the face normal.
    away = np.where(distances[:, None] > 1e-12, closest - points, face_normals)
    away /= np.linalg.norm(away, axis=1, keepdims=True).clip(1e-300)
    centre = closest.mean(0)
    centred = closest - centre
    columns = [np.cross(centred, away), away] + ([(away * centred).sum(1, keepdims=True)] if scale else [])
    jacobian = np.concatenate(columns, axis=1)
    update = -np.linalg.lstsq(jacobian, distances, rcond=None)[0]
    rotation = Rotation.from_rotvec(update[:3]).as_matrix()
    factor = 1.0 + (update[6] if scale else 0.0)
    return factor, rotation, centre + update[3:6] - factor * rotation @ centre


def compose(outer: tuple[float, np.ndarray, np.ndarray], inner: tuple[float, np.ndarray, np.ndarray]
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity x -> outer(inner(x))."""
    return outer[0] * inner[0], outer[1] @ inner[1], outer[0] * outer[1] @ inner[2] + outer[2]


def crop_sphere(vertices: np.ndarray, triangles: np.ndarray, centre: np.ndarray, radius: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The mesh's vertices within `radius` of `centre` (renumbered) and the triangles whose corners all stay."""
    vertices, triangles = np.asarray(vertices, np.float64), np.asarray(triangles, np.int64)
    keep = np.linalg.norm(vertices - np.asarray(centre, np.float64), axis=1) <= radius
    new_index = np.cumsum(keep) - 1
    kept_triangles = triangles[keep[triangles].all(1)]
    return vertices[keep], new_index[kept_triangles]


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (N, 3) (the renderer's `vertex_normals`, for numpy meshes)."""
    import torch

    from cest.render.geometry import vertex_normals as normals

    return normals(torch.from_numpy(np.asarray(vertices, np.float64))[None],
                   torch.from_numpy(np.asarray(triangles, np.int64)))[0].numpy()


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x * y).sum(-1)
