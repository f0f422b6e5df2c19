"""cest.render.raster against a slow per-pixel reference, plus gradient checks."""

import math

import pytest
import torch

from cest.render.raster import Fragments, interpolate, rasterize


def reference_rasterize(vertices, faces, image_size):
    """Loop over pixels and triangles in float64: inclusive edge test, nearest depth wins, lowest id on ties.

    Also returns, per pixel, whether its centre lies exactly on an edge line of a covering triangle (where a
    tie rule may legitimately pick a different triangle).
    """
    height, width = image_size
    vertices = vertices.detach().double()
    batch = vertices.shape[0]
    triangle_id = torch.full((batch, height, width), -1, dtype=torch.int64)
    barycentrics = torch.zeros(batch, height, width, 3, dtype=torch.float64)
    depth = torch.full((batch, height, width), math.inf, dtype=torch.float64)
    on_edge = torch.zeros(batch, height, width, dtype=torch.bool)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                px, py = j + 0.5, i + 0.5
                for f, (a, c, d) in enumerate(faces.tolist()):
                    (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = (vertices[b, k].tolist() for k in (a, c, d))
                    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                    if area == 0:
                        continue
                    w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
                    w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
                    w2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / area
                    if min(w0, w1, w2) < 0:
                        continue
                    if min(w0, w1, w2) == 0:
                        on_edge[b, i, j] = True
                    z = w0 * z0 + w1 * z1 + w2 * z2
                    if z < depth[b, i, j]:
                        depth[b, i, j] = z
                        triangle_id[b, i, j] = f
                        barycentrics[b, i, j] = torch.tensor([w0, w1, w2], dtype=torch.float64)
    return triangle_id, barycentrics, depth, on_edge


def random_scene(seed, batch=2, n_faces=20, image_size=(16, 20)):
    """Random overlapping triangles, some partly outside the image, one larger than it, one degenerate."""
    generator = torch.Generator().manual_seed(seed)
    height, width = image_size
    centres = torch.rand(batch, n_faces, 1, 2, generator=generator) * torch.tensor([width + 8.0, height + 8.0]) - 4
    offsets = (torch.rand(batch, n_faces, 3, 2, generator=generator) - 0.5) * 12
    xy = centres + offsets
    z = torch.rand(batch, n_faces, 3, 1, generator=generator) * 10
    vertices = torch.cat([xy, z], dim=-1)
    # Triangle 0 is larger than the image (and behind everything); triangle 1 is degenerate (collinear).
    vertices[:, 0, :, :2] = torch.tensor([[-30.0, -25.0], [60.0, -5.0], [-10.0, 50.0]])
    vertices[:, 0, :, 2] = 20.0
    vertices[:, 1] = torch.tensor([[1.5, 1.5, -1.0], [5.5, 5.5, -1.0], [9.5, 9.5, -1.0]])
    vertices = vertices.reshape(batch, n_faces * 3, 3).double()
    faces = torch.arange(n_faces * 3).reshape(n_faces, 3)
    return vertices, faces


def assert_matches_reference(fragments, vertices, faces, image_size):
    ref_id, ref_bary, ref_depth, on_edge = reference_rasterize(vertices, faces, image_size)
    same = fragments.triangle_id == ref_id
    assert (same | on_edge).all(), f"{int((~same & ~on_edge).sum())} pixels differ off edges"
    assert (~same).float().mean() < 0.05
    torch.testing.assert_close(fragments.barycentrics[same], ref_bary[same], atol=1e-9, rtol=0)
    torch.testing.assert_close(fragments.depth[same], ref_depth[same], atol=1e-9, rtol=0)
    background = fragments.triangle_id == -1
    assert (fragments.barycentrics[background] == 0).all()
    assert torch.isinf(fragments.depth[background]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_triangles(seed):
    vertices, faces = random_scene(seed)
    fragments = rasterize(vertices, faces, (16, 20), backend="torch")
    assert isinstance(fragments, Fragments)
    assert fragments.triangle_id.dtype == torch.int64
    assert fragments.triangle_id.shape == (2, 16, 20) and fragments.barycentrics.shape == (2, 16, 20, 3)
    assert (fragments.triangle_id >= 0).any() and (fragments.triangle_id == 0).any()
    assert not (fragments.triangle_id == 1).any(), "a degenerate triangle covered pixels"
    assert_matches_reference(fragments, vertices, faces, (16, 20))


def test_small_chunks_give_the_same_result():
    vertices, faces = random_scene(3)
    whole = rasterize(vertices, faces, (16, 20), backend="torch")
    chunked = rasterize(vertices, faces, (16, 20), backend="torch", max_chunk_pairs=7)
    assert torch.equal(whole.triangle_id, chunked.triangle_id)
    assert torch.equal(whole.barycentrics, chunked.barycentrics)


def test_float32_matches_float64_off_edges():
    vertices, faces = random_scene(4)
    single = rasterize(vertices.float(), faces, (16, 20))
    double = rasterize(vertices, faces, (16, 20))
    _, _, _, on_edge = reference_rasterize(vertices, faces, (16, 20))
    assert ((single.triangle_id == double.triangle_id) | on_edge).all()
    torch.testing.assert_close(single.barycentrics.double(), double.barycentrics, atol=1e-4, rtol=0)


def grid_mesh(rows, cols, origin, spacing, jitter=0.0, seed=0):
    """A regular triangulated grid (two triangles a cell, alternating diagonals), vertices in pixels."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(rows + 1.0), torch.arange(cols + 1.0), indexing="ij")
    xy = torch.stack([xs, ys], dim=-1).reshape(-1, 2) * spacing + torch.tensor(origin)
    xy = xy + jitter * (torch.rand(xy.shape, generator=generator) - 0.5)
    z = torch.rand(xy.shape[0], 1, generator=generator)
    faces = []
    for r in range(rows):
        for c in range(cols):
            v00, v01 = r * (cols + 1) + c, r * (cols + 1) + c + 1
            v10, v11 = v00 + cols + 1, v01 + cols + 1
            if (r + c) % 2:
                faces += [[v00, v01, v11], [v00, v11, v10]]
            else:
                faces += [[v00, v01, v10], [v01, v11, v10]]
    return torch.cat([xy, z], dim=-1).double()[None], torch.tensor(faces)


def single_triangle_coverage(vertices, faces, image_size):
    """How many triangles cover each pixel when every triangle is rasterized alone, (B, H, W)."""
    coverage = torch.zeros(vertices.shape[0], *image_size, dtype=torch.int64)
    for f in range(faces.shape[0]):
        coverage += (rasterize(vertices, faces[f : f + 1], image_size).triangle_id >= 0).long()
    return coverage


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_edges_cover_every_pixel_exactly_once(dtype):
    # Vertices on pixel centres and edges through them: every centre inside the grid is covered once, by
    # the tie rule (single-triangle renders, so the z-buffer cannot hide double coverage).
    vertices, faces = grid_mesh(4, 5, origin=(2.5, 1.5), spacing=2.0)
    vertices = vertices.to(dtype)
    flipped = faces.clone()
    flipped[::3] = flipped[::3, [0, 2, 1]]  # mixed orientations
    for triangles in (faces, flipped):
        coverage = single_triangle_coverage(vertices, triangles, (12, 14))
        inside = torch.zeros(1, 12, 14, dtype=torch.bool)
        # Centres with 2.5 <= x < 12.5 and 1.5 <= y < 9.5: the grid's right and bottom borders do not count.
        inside[:, 1:9, 2:12] = True
        assert (coverage[inside] == 1).all()
        assert (coverage[~inside] == 0).all()
        together = rasterize(vertices, triangles, (12, 14))
        assert ((together.triangle_id >= 0) == (coverage == 1)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jittered_mesh_has_no_holes_or_overlaps(dtype):
    # Off-grid coordinates: shared edges must still split pixels exactly (canonical edge evaluation).
    vertices, faces = grid_mesh(8, 8, origin=(1.37, 1.21), spacing=1.7, jitter=1.2, seed=3)
    vertices = vertices.to(dtype) * torch.tensor([1.0, 1.0, 0.0], dtype=dtype)
    coverage = single_triangle_coverage(vertices, faces, (16, 16))
    assert (coverage <= 1).all()
    assert (coverage[:, 3:12, 3:12] == 1).all()  # well inside the jittered boundary


def test_shared_edges_through_pixel_centres_with_inexact_endpoints():
    # Each image: two triangles sharing an edge whose line passes through pixel centres P and P + D while
    # its endpoints are not representable; rounding must not give those centres to both or neither.
    generator = torch.Generator().manual_seed(0)
    n = 200
    centre = torch.randint(2, 30, (n, 2), generator=generator) + 0.5
    step = torch.randint(-6, 7, (n, 2), generator=generator).double()
    step[(step == 0).all(1)] = torch.tensor([1.0, 3.0], dtype=torch.float64)
    start = centre + (torch.rand(n, 1, generator=generator, dtype=torch.float64) * -0.9 - 0.05) * step
    end = centre + (torch.rand(n, 1, generator=generator, dtype=torch.float64) * 0.9 + 1.05) * step
    normal = torch.stack([-step[:, 1], step[:, 0]], 1)
    middle = (start + end) / 2
    xy = torch.stack([start, end, middle + 0.77 * normal, middle - 0.61 * normal], 1)
    vertices = torch.cat([xy, torch.zeros(n, 4, 1, dtype=torch.float64)], 2).float()
    coverage = sum(
        (rasterize(vertices, torch.tensor([triangle]), (34, 34)).triangle_id >= 0).long()
        for triangle in ([0, 1, 2], [1, 0, 3])
    )
    for point in (centre, centre + step):
        col, row = point[:, 0].long(), point[:, 1].long()
        in_image = (col >= 0) & (col < 34) & (row >= 0) & (row < 34)
        hits = coverage[torch.arange(n)[in_image], row[in_image], col[in_image]]
        assert (hits == 1).all()


def test_top_left_rule_on_a_lone_square():
    # Square [1, 3] x [1, 3] split in two; centres on its left/top border count, right/bottom do not.
    vertices = torch.tensor([[[0.5, 0.5, 0.0], [3.5, 0.5, 0.0], [3.5, 3.5, 0.0], [0.5, 3.5, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    covered = rasterize(vertices, faces, (5, 5)).triangle_id >= 0
    expected = torch.zeros(1, 5, 5, dtype=torch.bool)
    expected[:, 0:3, 0:3] = True
    assert torch.equal(covered, expected)


def test_background_and_empty_scenes():
    vertices = torch.tensor([[[100.0, 100.0, 0.0], [120.0, 100.0, 0.0], [100.0, 130.0, 0.0]]], requires_grad=True)
    faces = torch.tensor([[0, 1, 2]])
    fragments = rasterize(vertices, faces, (8, 8))
    assert (fragments.triangle_id == -1).all()
    colours = torch.rand(1, 3, 2, requires_grad=True)
    image = interpolate(colours, fragments, faces)
    assert image.shape == (1, 8, 8, 2) and (image == 0).all()
    image.sum().backward()
    assert (colours.grad == 0).all()
    no_faces = rasterize(vertices, torch.zeros(0, 3, dtype=torch.int64), (8, 8))
    assert (no_faces.triangle_id == -1).all() and torch.isinf(no_faces.depth).all()


def test_interpolate_matches_reference_and_broadcasts():
    vertices, faces = random_scene(5)
    attributes = torch.randn(vertices.shape[1], 4, dtype=torch.float64)
    fragments = rasterize(vertices, faces, (16, 20))
    image = interpolate(attributes, fragments, faces)
    batched = interpolate(attributes.expand(2, -1, -1), fragments, faces)
    torch.testing.assert_close(image, batched)
    ref_id, ref_bary, _, _ = reference_rasterize(vertices, faces, (16, 20))
    same = (fragments.triangle_id == ref_id) & (ref_id >= 0)
    expected = torch.einsum("bhwk,bhwkc->bhwc", ref_bary, attributes[faces[ref_id.clamp(min=0)]])
    torch.testing.assert_close(image[same], expected[same])
    assert (image[fragments.triangle_id < 0] == 0).all()


def test_gradients_match_finite_differences():
    # Jittered grid away from pixel-centre ties so that small perturbations do not change coverage.
    vertices, faces = grid_mesh(3, 3, origin=(1.1, 0.9), spacing=2.3, jitter=0.4, seed=1)
    vertices = torch.cat([vertices, vertices + torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64)])
    attributes = torch.randn(2, vertices.shape[1], 3, dtype=torch.float64, requires_grad=True)
    vertices.requires_grad_(True)
    fragments = rasterize(vertices, faces, (10, 10))
    # Every covered centre is well inside its triangle (edge distance > 1e-3) so gradcheck's steps stay put.
    assert (fragments.triangle_id >= 0).sum() > 50
    assert fragments.barycentrics[fragments.triangle_id >= 0].min() > 1e-3

    def render(vertices, attributes):
        fragments = rasterize(vertices, faces, (10, 10))
        return interpolate(attributes, fragments, faces), fragments.depth.nan_to_num(posinf=0.0)

    assert torch.autograd.gradcheck(render, (vertices, attributes), eps=1e-6, atol=1e-6)


def test_rejects_bad_input():
    vertices = torch.zeros(1, 3, 3)
    faces = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="vertices"):
        rasterize(vertices[0], faces, (4, 4))
    with pytest.raises(ValueError, match="faces"):
        rasterize(vertices, faces.float(), (4, 4))
    with pytest.raises(ValueError, match="outside"):
        rasterize(vertices, faces + 1, (4, 4))
    with pytest.raises(ValueError, match="image_size"):
        rasterize(vertices, faces, (4, 0))
    with pytest.raises(ValueError, match="backend"):
        rasterize(vertices, faces, (4, 4), backend="opengl")


def test_nvdiffrast_backend_reports_unavailability():
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="nvdiffrast is not importable"):
            rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), (4, 4), backend="nvdiffrast")
    else:
        with pytest.raises(ValueError, match="CUDA"):
            rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), (4, 4), backend="nvdiffrast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backends_agree_with_cpu():
    vertices, faces = grid_mesh(20, 24, origin=(3.3, 2.7), spacing=2.9, jitter=1.0, seed=2)
    vertices = torch.cat([vertices, vertices.flip(1)]).float()
    cpu = rasterize(vertices, faces, (64, 80), backend="torch")
    gpu = rasterize(vertices.cuda(), faces.cuda(), (64, 80), backend="torch")
    # Same IEEE operations on both devices: identical up to (rare) library differences.
    same_device_ids = cpu.triangle_id == gpu.triangle_id.cpu()
    assert same_device_ids.float().mean() > 0.999
    torch.testing.assert_close(
        cpu.barycentrics[same_device_ids], gpu.barycentrics.cpu()[same_device_ids], atol=1e-5, rtol=0
    )
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return
    nvdr = rasterize(vertices.cuda(), faces.cuda(), (64, 80), backend="nvdiffrast")
    # Tie rules and nvdiffrast's sub-pixel snapping differ only for centres (nearly) on edges.
    agree = (nvdr.triangle_id.cpu() == cpu.triangle_id).float().mean()
    assert agree > 0.98
    same = nvdr.triangle_id.cpu() == cpu.triangle_id
    torch.testing.assert_close(nvdr.barycentrics.cpu()[same], cpu.barycentrics[same], atol=1e-5, rtol=0)
    torch.testing.assert_close(nvdr.depth.cpu()[same], cpu.depth[same], atol=1e-4, rtol=0)
