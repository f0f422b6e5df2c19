"""Time rasterize + interpolate (forward + backward) on a face-sized workload; prints JSON.

Workload (stands in for the 3DMM: 3,448 vertices, 6,736 triangles): a 59 x 59-vertex ellipsoid-cap height
field (3,481 vertices, 6,728 triangles), 180 x 216 px in a 224 x 224 image, a batch of 16 yaws from -45 to
45 degrees, 3 attribute channels. Vertices and attributes require gradients.

    python benchmarks/bench_raster.py [--threads 2] [--runs 5] [--device cpu|cuda] [--backend auto|torch|nvdiffrast]

(from a worktree other than the one the venv's editable install points at: PYTHONPATH=. python ...)
"""

import argparse
import json
import math
import os
import resource
import statistics
import time

import torch

from cest.render.raster import BACKENDS, interpolate, rasterize


def face_like_mesh(grid: int = 59) -> tuple[torch.Tensor, torch.Tensor]:
    """Ellipsoid cap in model space (half-width 1, x right, y up, z toward the camera) and its triangles."""
    v, u = torch.meshgrid(torch.linspace(-1.2, 1.2, grid), torch.linspace(-1, 1, grid), indexing="ij")
    radial = (1 - u**2 - (v / 1.2) ** 2).clamp(min=0)
    vertices = torch.stack([u, -v, 0.8 * radial.sqrt()], dim=-1).reshape(-1, 3)
    index = torch.arange(grid * grid).reshape(grid, grid)
    top_left, top_right = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1)
    bottom_left, bottom_right = index[1:, :-1].reshape(-1), index[1:, 1:].reshape(-1)
    faces = torch.cat(
        [torch.stack([top_left, bottom_left, top_right], 1), torch.stack([top_right, bottom_left, bottom_right], 1)]
    )
    return vertices, faces


def project_batch(vertices: torch.Tensor, batch: int, image_size: int, width_px: float) -> torch.Tensor:
    """Yaw the mesh from -45 to 45 degrees and project (weak perspective) to pixel coordinates."""
    yaw = torch.linspace(-math.pi / 4, math.pi / 4, batch)
    cos, sin = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    x, y, z = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    rotated_x = cos * x + sin * z
    rotated_z = -sin * x + cos * z
    scale = width_px / image_size  # half-width 1 -> width_px / 2 pixels
    half = image_size / 2
    return torch.stack(
        [(rotated_x * scale + 1) * half, (1 - y.expand_as(rotated_x) * scale) * half, -rotated_z * scale * half], -1
    )


def run_once(pixels, attributes, faces, image_size, device, backend):
    vertices = pixels.clone().requires_grad_(True)
    colours = attributes.clone().requires_grad_(True)
    start, start_cpu = time.perf_counter(), time.process_time()
    fragments = rasterize(vertices, faces, (image_size, image_size), backend)
    image = interpolate(colours, fragments, faces)
    if device.type == "cuda":
        torch.cuda.synchronize()
    forward = time.perf_counter() - start
    (image.square().sum() + fragments.depth.nan_to_num(posinf=0.0).sum()).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    coverage = float((fragments.triangle_id >= 0).float().mean())
    return forward, total, total_cpu, coverage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="auto: nvdiffrast on CUDA when installed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    mesh, faces = face_like_mesh()
    pixels = project_batch(mesh, args.batch, args.image_size, width_px=180.0).to(device)
    faces = faces.to(device)
    attributes = torch.rand(args.batch, mesh.shape[0], 3, device=device)
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    run_once(pixels, attributes, faces, args.image_size, device, args.backend)  # warm-up
    runs = [run_once(pixels, attributes, faces, args.image_size, device, args.backend) for _ in range(args.runs)]
    result = {
        "device": str(device),
        "backend": args.backend,
        "threads": args.threads,
        "batch": args.batch,
        "image_size": args.image_size,
        "vertices": mesh.shape[0],
        "triangles": faces.shape[0],
        "covered_pixel_fraction": round(runs[0][3], 4),
        "forward_ms_median": round(1000 * statistics.median(r[0] for r in runs), 1),
        "forward_backward_ms_median": round(1000 * statistics.median(r[1] for r in runs), 1),
        "forward_backward_ms_all": [round(1000 * r[1], 1) for r in runs],
        # CPU time of all threads: less sensitive than wall time to other processes on a shared machine.
        "forward_backward_cpu_ms_median": round(1000 * statistics.median(r[2] for r in runs), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        # On an oversubscribed machine OpenMP's default spin-waiting makes multi-threaded wall times erratic;
        # OMP_WAIT_POLICY=PASSIVE avoids that.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_runs_mb": round(rss_before_mb, 1),
    }
    if device.type == "cuda":
        result["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
