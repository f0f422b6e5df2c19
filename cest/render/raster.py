"""Differentiable triangle rasterization in pure PyTorch (optionally nvdiffrast on CUDA).

Conventions: vertices are in pixel coordinates, x right, y down, the centre of pixel (row i, col j) at
(j + 0.5, i + 0.5); smaller z is closer to the camera. There is no backface culling.

Coverage rule. A pixel is covered by a triangle when its centre is inside it. A centre exactly on an edge
belongs to the triangle on the edge's "top-left" side: the triangle whose interior lies toward +x from the
edge, or toward +y (down) when the edge is horizontal. Every edge function is evaluated with the edge's
endpoints in one canonical order (lexicographic in (x, y)), so two triangles sharing an edge compute exactly
opposite values and a centre on that edge is covered by exactly one of them. Zero-area triangles (within
rounding) cover nothing. Among the triangles covering a pixel the smallest depth wins, ties going to the
lowest triangle index.

Algorithm (torch backend, no Python loop over triangles or pixels): every triangle tests the pixel centres
of its bounding box clipped to the image. Triangles are bucketed by box shape (exact up to 4 pixels a side,
else the next power of two) so that a bucket is one broadcast grid per triangle, and edge values and depth
are separable into per-row and per-column terms; buckets are cut into chunks of bounded size. A z-buffer
(scatter_reduce amin on depth, then on the triangle index among the nearest hits) picks the winner.

Gradients follow nvdiffrast: which triangle covers a pixel is discrete, while the barycentrics (and depth)
are recomputed differentiably from the winning triangle's vertices at the pixel centre, so interpolated
attributes carry gradients to the vertex positions and to the attributes (not through silhouettes).
"""

from dataclasses import dataclass

import torch

from cest.config import RASTER_BACKENDS

BACKENDS = RASTER_BACKENDS
# (triangle, candidate pixel) pairs tested at once: bounds the coverage pass's memory (~25 bytes a pair).
MAX_CHUNK_PAIRS = 1 << 20


@dataclass
class Fragments:
    """Per-pixel rasterization result.

    triangle_id: (B, H, W) int64 index into faces, -1 where no triangle covers the pixel.
    barycentrics: (B, H, W, 3) weights of the winning triangle's vertices at the pixel centre, 0 on background.
    depth: (B, H, W) interpolated z of the winning triangle, +inf on background.
    """

    triangle_id: torch.Tensor
    barycentrics: torch.Tensor
    depth: torch.Tensor


def rasterize(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    image_size: tuple[int, int],
    backend: str = "auto",
    max_chunk_pairs: int = MAX_CHUNK_PAIRS,
) -> Fragments:
    """Rasterize a batch of meshes sharing one triangle list.

    vertices: (B, N, 3) float pixel coordinates; faces: (F, 3) int64; image_size: (H, W).
    backend: "torch" (pure PyTorch, CPU or CUDA), "nvdiffrast" (CUDA only) or "auto" (nvdiffrast when it
    is importable and the vertices are on CUDA, else torch). The backends differ only in which triangle
    they assign to pixels whose centres lie (nearly) on edges.
    """
    height, width = _check_inputs(vertices, faces, image_size)
    if _resolve_backend(backend, vertices) == "nvdiffrast":
        triangle_id = _nvdiffrast_triangle_ids(vertices, faces, (height, width))
    else:
        triangle_id = _torch_triangle_ids(vertices, faces, (height, width), max_chunk_pairs)
    return _fragments(vertices, faces, triangle_id)


def interpolate(attributes: torch.Tensor, fragments: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes (B, N, C) or (N, C) to pixels: (B, H, W, C), zeros on background."""
    batch, height, width = fragments.triangle_id.shape
    if attributes.dim() not in (2, 3) or (attributes.dim() == 3 and attributes.shape[0] != batch):
        raise ValueError(f"attributes must be (B={batch}, N, C) or (N, C), got {tuple(attributes.shape)}")
    channels = attributes.shape[-1]
    n_faces = faces.shape[0]
    pixel, instance = _covered_pixels(fragments.triangle_id, n_faces)
    corners = faces.to(attributes.device).index_select(0, instance % n_faces)  # (M, 3) vertex ids per pixel
    if attributes.dim() == 3:
        corners = corners + (instance // n_faces * attributes.shape[1])[:, None]
    # Contiguous 1-D gathers and arithmetic per corner and channel: on CPU much faster (forward and
    # backward) than broadcasting over (M, 3, C). Only the vertices go channels-first, not every triangle's
    # corners (16 faces of 6,736 triangles: a 1.6M-element transpose, 11% of a 64 px step).
    columns = attributes.reshape(-1, channels).t().contiguous()  # (C, B * N)
    weights = fragments.barycentrics.reshape(-1, 3).index_select(0, pixel).t().contiguous().to(attributes.dtype)
    w0, w1, w2 = weights.unbind(0)
    v0, v1, v2 = corners.t().contiguous().unbind(0)
    values = torch.stack([w0 * column.index_select(0, v0) + w1 * column.index_select(0, v1)
                          + w2 * column.index_select(0, v2) for column in columns], dim=1)
    image = values.new_zeros(batch * height * width, channels).index_copy(0, pixel, values)
    return image.view(batch, height, width, channels)


def _check_inputs(vertices: torch.Tensor, faces: torch.Tensor, image_size) -> tuple[int, int]:
    if vertices.dim() != 3 or vertices.shape[-1] != 3 or not vertices.is_floating_point():
        raise ValueError(f"vertices must be a float tensor (B, N, 3), got {vertices.dtype} {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3 or faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"faces must be an integer tensor (F, 3), got {faces.dtype} {tuple(faces.shape)}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[1]):
        raise ValueError(f"faces index vertices outside [0, {vertices.shape[1]})")
    if len(image_size) != 2 or any(int(s) != s or s <= 0 for s in image_size):
        raise ValueError(f"image_size must be two positive integers (H, W), got {image_size}")
    return int(image_size[0]), int(image_size[1])


def _resolve_backend(backend: str, vertices: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "nvdiffrast":
        _import_nvdiffrast()
        if not vertices.is_cuda:
            raise ValueError("backend='nvdiffrast' needs the vertices on a CUDA device")
        return "nvdiffrast"
    if vertices.is_cuda and _nvdiffrast_available():
        return "nvdiffrast"
    return "torch"


# ---------------------------------------------------------------------------------------------------------
# Edge functions shared by the coverage test and the differentiable barycentrics.


def _canonical_edges(start: torch.Tensor, end: torch.Tensor):
    """Edges start -> end as (origin, direction, sign) with origin the lexicographically smaller endpoint.

    start, end: (..., 2). The edge function of a point p is sign * cross(direction, p - origin); evaluating
    it from the canonical origin makes both triangles of a shared edge compute bit-identical magnitudes.
    """
    swap = (start[..., 0] > end[..., 0]) | ((start[..., 0] == end[..., 0]) & (start[..., 1] > end[..., 1]))
    swap2 = swap.unsqueeze(-1)
    origin = torch.where(swap2, end, start)
    direction = torch.where(swap2, start - end, end - start)
    sign = 1.0 - 2.0 * swap.to(start.dtype)
    return origin, direction, sign


def _triangle_edges(corners_xy: torch.Tensor):
    """(..., 3, 2) triangle corners -> canonical edges (..., 3, ...) with edge k opposite corner k."""
    start = corners_xy.roll(-1, dims=-2)  # corner k + 1
    end = corners_xy.roll(-2, dims=-2)  # corner k + 2
    return _canonical_edges(start, end)


def _edge_values(origin, direction, px, py):
    """cross(direction, p - origin) = dx * (py - oy) - dy * (px - ox), elementwise."""
    return direction[..., 0] * (py - origin[..., 1]) - direction[..., 1] * (px - origin[..., 0])


# ---------------------------------------------------------------------------------------------------------
# Pure PyTorch coverage + z-buffer (no gradients).


@torch.no_grad()
def _torch_triangle_ids(vertices, faces, image_size, max_chunk_pairs) -> torch.Tensor:
    """Winning triangle per pixel, (B, H, W) int64 with -1 for background.

    Each triangle tests the pixel centres of its bounding box, enumerated as a grid of a shape shared by a
    bucket of triangles (exact for sides up to 4 pixels, else the next power of two), so that a bucket is
    tested with broadcasting and no per-pixel gathers.
    """
    height, width = image_size
    batch, n_faces = vertices.shape[0], faces.shape[0]
    work = vertices if vertices.dtype in (torch.float32, torch.float64) else vertices.float()
    corners = work.index_select(1, faces.to(work.device).reshape(-1)).reshape(batch * n_faces, 3, 3)  # b * F + f
    table, buckets = _triangle_table(corners, image_size, n_faces)
    hits = [
        _grid_hits(table, chunk, width)
        for bucket in buckets
        for chunk in _bucket_chunks(*bucket, max_chunk_pairs)
    ]
    n_pixels = batch * height * width
    if not hits:
        return torch.full((batch, height, width), -1, dtype=torch.int64, device=vertices.device)
    pixel, depth, face = (torch.cat(parts) for parts in zip(*hits))
    return _resolve_depth(pixel, depth, face, n_pixels, n_faces).view(batch, height, width)


def _triangle_table(corners: torch.Tensor, image_size, n_faces: int):
    """Per-triangle data for the coverage test, for triangles with candidate pixels, sorted by grid shape.

    Returns the table (dict of tensors indexed by triangle) and the buckets (start, end, grid_rows,
    grid_cols) of table rows sharing a grid shape.
    """
    height, width = image_size
    instance, first, size, double_area = _candidates(corners, image_size)
    n_cols, n_rows = size.unbind(1)
    grid_rows, grid_cols = _grid_side(n_rows, height), _grid_side(n_cols, width)
    shape_key, order = (grid_rows * (width + 1) + grid_cols).sort(stable=True)
    instance, first, n_cols, n_rows, double_area = (
        values.index_select(0, order) for values in (instance, first, n_cols, n_rows, double_area))
    corners = corners.index_select(0, instance)

    origin, direction, sign = _triangle_edges(corners[..., :2])
    # Fold the canonical sign and the orientation into the direction so that the inside is where edge
    # values are positive (negation is exact: shared edges still get exactly opposite values).
    orientation = torch.sign(double_area)
    direction = direction * (sign * orientation[:, None])[..., None]
    # Top-left rule: a centre on an edge (value 0) counts when the inside normal (-dy, dx) points to +x,
    # or to +y for horizontal edges. Testing value >= threshold with threshold 0 on those edges and the
    # smallest normal float on the others is the same as value > 0 or (value == 0 and edge counts).
    counts = (direction[..., 1] < 0) | ((direction[..., 1] == 0) & (direction[..., 0] > 0))
    tiny = torch.tensor(torch.finfo(corners.dtype).tiny, dtype=corners.dtype, device=corners.device)
    threshold = torch.where(counts, torch.zeros_like(tiny), tiny)

    batch_index = torch.div(instance, n_faces, rounding_mode="floor")
    col0, row0 = first.unbind(1)
    # Triangle index last (contiguous) so that the grids below vectorise along triangles.
    table = {
        "origin": origin.permute(1, 2, 0).contiguous(),  # (3 edges, 2, T)
        "direction": direction.permute(1, 2, 0).contiguous(),
        "threshold": threshold.t().contiguous(),  # (3, T)
        "depth_per_area": (corners[..., 2] / double_area[:, None].abs()).t().contiguous(),
        "first_x": col0.to(corners.dtype) + 0.5,  # centre of the box's first column
        "first_y": row0.to(corners.dtype) + 0.5,
        "n_cols": n_cols,
        "n_rows": n_rows,
        "corner_pixel": batch_index * (height * width) + row0 * width + col0,  # flat pixel of the box corner
        "face": instance - batch_index * n_faces,
    }
    keys, counts_per_key = torch.unique_consecutive(shape_key, return_counts=True)
    buckets, start = [], 0
    for key, count in zip(keys.tolist(), counts_per_key.tolist()):
        buckets.append((start, start + count, key // (width + 1), key % (width + 1)))
        start += count
    return table, buckets


def _candidates(corners: torch.Tensor, image_size):
    """The triangles that may cover a pixel centre, with their boxes of candidate pixels.

    Returns (instance, first, size, double_area): the indices into `corners` of the triangles whose
    bounding box, clipped to the image, holds a pixel centre and that are finite and not degenerate; the
    (column, row) of their box's first pixel and the box's (columns, rows), int64 (T, 2); twice their signed
    area. The cheap box test runs on every triangle, the rest only on the candidates: at 64 px most of a
    face's triangles fall between pixel centres.
    """
    height, width = image_size
    xy = corners[..., :2]
    # Centre j + 0.5 lies in [low, high] iff ceil(low - 0.5) <= j <= floor(high - 0.5); clamp before
    # rounding so that huge coordinates convert to integers safely.
    # Elementwise minima over the three corners: reductions over a dimension of 3 are several times slower
    # on CPU, and this runs on every triangle of the batch.
    limit = torch.tensor([width, height], dtype=xy.dtype, device=xy.device)
    low = torch.minimum(torch.minimum(xy[:, 0], xy[:, 1]), xy[:, 2])
    high = torch.maximum(torch.maximum(xy[:, 0], xy[:, 1]), xy[:, 2])
    first = (low - 0.5).clamp(min=-1.0).minimum(limit).ceil().clamp(min=0)
    last = (high - 0.5).clamp(min=-1.0).minimum(limit).floor().minimum(limit - 1)
    size = last - first + 1
    boxed = torch.nonzero((size[:, 0] > 0) & (size[:, 1] > 0)).squeeze(1)  # NaN sizes compare false

    # index_select, not advanced indexing: several times faster on CPU.
    corners = corners.index_select(0, boxed)
    edge1 = corners[:, 1, :2] - corners[:, 0, :2]
    edge2 = corners[:, 2, :2] - corners[:, 0, :2]
    product1, product2 = edge1[:, 0] * edge2[:, 1], edge1[:, 1] * edge2[:, 0]
    double_area = product1 - product2
    # Areas within the cross product's rounding error count as zero. A non-finite x or y makes the area
    # non-finite, a non-finite z the sum of the depths.
    rounding = 4 * torch.finfo(corners.dtype).eps * (product1.abs() + product2.abs())
    depth_sum = corners[:, 0, 2] + corners[:, 1, 2] + corners[:, 2, 2]
    valid = torch.nonzero(torch.isfinite(depth_sum) & (double_area.abs() > rounding)).squeeze(1)
    kept = boxed.index_select(0, valid)
    return (kept, first.index_select(0, kept).long(), size.index_select(0, kept).long(),
            double_area.index_select(0, valid))


def _grid_side(n: torch.Tensor, limit: int) -> torch.Tensor:
    """Grid side for a box side n: n itself up to 4, else the next power of two, at most the image side."""
    power = torch.pow(2, torch.log2(n.clamp(min=1).double()).ceil()).long()
    power = torch.where(power < n, power * 2, power)  # guard against log2 rounding down
    return torch.where(n <= 4, n, power.clamp(max=limit))


def _bucket_chunks(start: int, end: int, grid_rows: int, grid_cols: int, max_chunk_pairs: int):
    """Split a bucket into (first triangle, end triangle, first grid row, end grid row, grid_cols) pieces
    of at most max_chunk_pairs (triangle, pixel) pairs (at least one grid row of one triangle)."""
    rows_per_piece = max(1, min(grid_rows, max_chunk_pairs // grid_cols))
    triangles_per_piece = max(1, max_chunk_pairs // (rows_per_piece * grid_cols))
    for first in range(start, end, triangles_per_piece):
        for row in range(0, grid_rows, rows_per_piece):
            yield first, min(end, first + triangles_per_piece), row, min(grid_rows, row + rows_per_piece), grid_cols


def _grid_hits(table, chunk, width):
    """Test a piece of a bucket: (flat pixel, depth, face index) of the covered (triangle, pixel) pairs."""
    first, end, row_start, row_end, grid_cols = chunk
    part = {name: values[..., first:end] for name, values in table.items()}
    dtype = part["first_x"].dtype
    rows = torch.arange(row_start, row_end, device=part["first_x"].device)[:, None]
    cols = torch.arange(grid_cols, device=rows.device)[:, None]
    # Pixel centre coordinates (rows, T) and (cols, T), NaN outside each triangle's clipped box so that
    # every edge test fails there. Edge values are separable, dx * (y - oy) - dy * (x - ox), so products
    # are taken on the small row / column tensors and only the difference on the (rows, cols, T) grid.
    ys = torch.where(rows < part["n_rows"], part["first_y"] + rows.to(dtype), torch.nan)
    xs = torch.where(cols < part["n_cols"], part["first_x"] + cols.to(dtype), torch.nan)
    # Depth = sum_k z_k * value_k / (2 * area) is separable the same way.
    inside = None
    depth_rows, depth_cols = 0.0, 0.0
    for k in range(3):
        (origin_x, origin_y), (direction_x, direction_y) = part["origin"][k], part["direction"][k]
        row_term = direction_x * (ys - origin_y)
        col_term = direction_y * (xs - origin_x)
        edge_inside = (row_term[:, None] - col_term[None]) >= part["threshold"][k]
        inside = edge_inside if inside is None else inside.logical_and_(edge_inside)
        depth_rows = depth_rows + part["depth_per_area"][k] * row_term
        depth_cols = depth_cols + part["depth_per_area"][k] * col_term

    flat = torch.nonzero(inside.view(-1)).squeeze(1)
    depth = (depth_rows[:, None] - depth_cols[None]).view(-1).index_select(0, flat)
    pixel = ((part["corner_pixel"] + rows * width)[:, None] + cols[None]).view(-1).index_select(0, flat)
    triangle = flat % (end - first)
    return pixel, depth, part["face"].index_select(0, triangle)


def _resolve_depth(pixel, depth, face, n_pixels, n_faces) -> torch.Tensor:
    """Z-buffer: per pixel the face of minimum depth, lowest face index on ties; -1 where nothing hits."""
    nearest = torch.full((n_pixels,), float("inf"), dtype=depth.dtype, device=depth.device)
    nearest.scatter_reduce_(0, pixel, depth, reduce="amin")
    winner = depth == nearest.index_select(0, pixel)
    triangle_id = torch.full((n_pixels,), n_faces, dtype=torch.int64, device=depth.device)
    triangle_id.scatter_reduce_(0, pixel[winner], face[winner], reduce="amin")
    return torch.where(triangle_id == n_faces, torch.full_like(triangle_id, -1), triangle_id)


# ---------------------------------------------------------------------------------------------------------
# Differentiable barycentrics of the assigned triangles.


def _covered_pixels(triangle_id: torch.Tensor, n_faces: int):
    """Flat indices of the covered pixels and their triangle instances (batch index * F + triangle)."""
    batch, height, width = triangle_id.shape
    flat = triangle_id.reshape(-1)
    pixel = torch.nonzero(flat >= 0).squeeze(1)
    pixel_batch = torch.div(pixel, height * width, rounding_mode="floor")
    return pixel, pixel_batch * n_faces + flat.index_select(0, pixel)


def _fragments(vertices: torch.Tensor, faces: torch.Tensor, triangle_id: torch.Tensor) -> Fragments:
    """Barycentrics and depth at the pixel centres, differentiable w.r.t. the vertices."""
    batch, height, width = triangle_id.shape
    pixel, instance = _covered_pixels(triangle_id, faces.shape[0])
    # Planes only for the triangles that win a pixel (a fifth of them at 64 px), each once.
    used, instance = torch.unique(instance, return_inverse=True)
    planes, reference = _barycentric_planes(vertices, faces.to(vertices.device), used)
    in_image = pixel % (height * width)
    row = torch.div(in_image, width, rounding_mode="floor")
    # Offsets from the triangle's reference pixel: small integers, exact in floating point.
    reference = reference.index_select(1, instance)
    offset_x = (in_image - row * width - reference[0]).to(vertices.dtype)
    offset_y = (row - reference[1]).to(vertices.dtype)
    # One contiguous 1-D gather per coefficient: much faster on CPU (forward and backward) than
    # broadcasting over narrow rows.
    at_reference, along_x, along_y = ([plane.index_select(0, instance) for plane in kind] for kind in planes)
    values = [at_reference[k] + along_x[k] * offset_x + along_y[k] * offset_y for k in range(4)]

    n_pixels = batch * height * width
    barycentrics = values[0].new_zeros(n_pixels, 3).index_copy(0, pixel, torch.stack(values[:3], dim=1))
    depth = values[3].new_full((n_pixels,), float("inf")).index_copy(0, pixel, values[3])
    return Fragments(
        triangle_id=triangle_id,
        barycentrics=barycentrics.view(batch, height, width, 3),
        depth=depth.view(batch, height, width),
    )


def _barycentric_planes(vertices: torch.Tensor, faces: torch.Tensor, instances: torch.Tensor):
    """Barycentrics and depth of triangle instances (batch index * F + triangle) as affine functions of the
    pixel position.

    Returns the planes as three lists (value at the reference pixel's centre, d/dx, d/dy) of four (T,)
    tensors (barycentrics of corners 0, 1, 2 and depth), one entry per instance, and the reference pixel
    (column, row) near corner 0, (2, T) int64. Planes are computed per triangle rather than per pixel to keep
    the autograd graph small; edge values use the same canonical evaluation as the coverage test. A
    degenerate triangle gets a unit divisor so that it cannot put NaN into gradients.
    """
    n_vertices, n_faces = vertices.shape[1], faces.shape[0]
    batch_index = torch.div(instances, n_faces, rounding_mode="floor")
    corner_rows = faces.index_select(0, instances - batch_index * n_faces) + (batch_index * n_vertices)[:, None]
    corners = vertices.reshape(-1, 3).index_select(0, corner_rows.reshape(-1)).view(-1, 3, 3)
    reference = corners[:, 0, :2].detach().floor().clamp(-(2.0**30), 2.0**30)
    centre = reference + 0.5
    origin, direction, sign = _triangle_edges(corners[..., :2])
    edge_at_reference = sign * _edge_values(origin, direction, centre[:, None, 0], centre[:, None, 1])
    double_area = edge_at_reference.sum(dim=1, keepdim=True)
    double_area = torch.where(double_area != 0, double_area, torch.ones_like(double_area))
    # Edge value k = sign * (dx * (y - oy) - dy * (x - ox)): d/dx = -sign * dy, d/dy = sign * dx.
    weights = torch.stack(
        [edge_at_reference, -sign * direction[..., 1], sign * direction[..., 0]], dim=0
    ) / double_area  # (3 [value, d/dx, d/dy], T, 3 corners)
    depth = (weights * corners[..., 2]).sum(dim=2, keepdim=True)
    planes = torch.cat([weights, depth], dim=2).transpose(1, 2).contiguous()  # (3, 4, T)
    return [kind.unbind(0) for kind in planes.unbind(0)], reference.long().t()


# ---------------------------------------------------------------------------------------------------------
# nvdiffrast backend (triangle assignment only; barycentrics are recomputed by _fragments).

_NVDIFFRAST_CONTEXTS: dict = {}


def _nvdiffrast_available() -> bool:
    try:
        _import_nvdiffrast()
    except RuntimeError:
        return False
    return True


def _import_nvdiffrast():
    try:
        import nvdiffrast.torch as dr
    except ImportError as error:
        raise RuntimeError(
            "backend='nvdiffrast' requested but nvdiffrast is not importable "
            "(install it from https://github.com/NVlabs/nvdiffrast, or use backend='torch')"
        ) from error
    return dr


@torch.no_grad()
def _nvdiffrast_triangle_ids(vertices, faces, image_size) -> torch.Tensor:
    """Triangle per pixel from nvdiffrast's CUDA rasterizer, (B, H, W) int64 with -1 for background.

    Clip space: x_ndc = 2 x / W - 1 puts pixel centres where nvdiffrast samples them; nvdiffrast's row 0
    is at y_ndc = -1, so y_ndc = 2 y / H - 1 keeps our rows (y down) without a flip. Depth is mapped per
    image affinely (order preserving) into [-0.9, 0.9] so that nothing is clipped by the near/far planes.
    """
    dr = _import_nvdiffrast()
    height, width = image_size
    device = vertices.device
    if faces.shape[0] == 0:  # nvdiffrast rejects empty triangle lists
        return torch.full((vertices.shape[0], height, width), -1, dtype=torch.int64, device=device)
    if device not in _NVDIFFRAST_CONTEXTS:
        _NVDIFFRAST_CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    x = vertices[..., 0].float() * (2.0 / width) - 1.0
    y = vertices[..., 1].float() * (2.0 / height) - 1.0
    z = vertices[..., 2].float()
    z_low = z.amin(dim=1, keepdim=True)
    z_span = (z.amax(dim=1, keepdim=True) - z_low).clamp(min=1e-12)
    z_ndc = (z - z_low) / z_span * 1.8 - 0.9
    clip = torch.stack([x, y, z_ndc, torch.ones_like(x)], dim=-1).contiguous()
    rast, _ = dr.rasterize(
        _NVDIFFRAST_CONTEXTS[device], clip, faces.to(device=device, dtype=torch.int32).contiguous(), (height, width),
        grad_db=False,
    )
    # Channel 3 holds triangle index + 1 as a float (0 = background).
    return rast[..., 3].round().long() - 1
