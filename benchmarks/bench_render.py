"""Forward + backward of the renderer (rasterize + UV sampling + SH shading) on a batch of SFM faces.

Prints JSON. Workload (the foundation issue's): 16 Surrey Face Model faces at 224 x 224, about 180 px wide,
yaws spread from -45 to 45 degrees, a 256 x 256 reflectance map, random SH light; CPU with 2 threads, and
CUDA (the pure-PyTorch rasterizer and, when installed, nvdiffrast) where a GPU is present.
Only the renderer is measured. For comparison the output repeats, as a quoted reference and not a measurement,
the anchor of issue 2 (the foundation issue): PyTorch3D's C++ CPU rasterizer (rasterize_meshes plus
interpolation) was quoted there at about 29 s for this batch on the project's 2-core machine. PyTorch3D is
not installed here, so this script does not time it and computes no ratio against it.

    python benchmarks/bench_render.py [--batch 16] [--size 224] [--repeats 5]
"""

import argparse
import json
import math
import resource
import statistics
import time

import torch

from cest.render.lighting import ambient_sh
from cest.morphable import load_sfm
from cest.render.renderer import Renderer

REFERENCE = {
    "reference": "PyTorch3D rasterize_meshes + interpolation, CPU, same batch",
    "quoted_ms_per_batch": 29_000,
    "source": "issue 2 (foundation and renderer), as quoted there; not measured by this script",
}


def workload(model, batch: int, device):
    yaws = torch.linspace(-math.pi / 4, math.pi / 4, batch)
    viewpoint = torch.zeros(batch, 7)
    viewpoint[:, 0] = 180 / 224  # mean face half-width is 1 model unit: 2 units ~ 180 px of 224
    viewpoint[:, 2] = yaws
    identity = torch.randn(batch, model.n_identity) * 0.5
    sh = ambient_sh(batch) + 0.2 * torch.randn(batch, 9)
    tensors = dict(
        alpha_id=identity, viewpoint=viewpoint, reflectance=torch.rand(batch, 3, 256, 256), sh=sh
    )
    return {k: v.to(device).requires_grad_() for k, v in tensors.items()}


def time_step(renderer, model, inputs, device) -> float:
    vertices = model.shape(inputs["alpha_id"], torch.zeros(len(inputs["sh"]), model.n_expression, device=device))
    start = time.perf_counter()
    image, mask = renderer.render(vertices, inputs["viewpoint"], inputs["reflectance"], inputs["sh"])
    (image * mask).mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000


def measure(device, backend: str, args) -> dict:
    model = load_sfm().to(device)
    renderer = Renderer.for_model(model, args.size, 256, raster_backend=backend).to(device)
    inputs = workload(model, args.batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    time_step(renderer, model, inputs, device)  # warm-up
    times = [time_step(renderer, model, inputs, device) for _ in range(args.repeats)]
    result = {"device": str(device), "backend": backend, "batch": args.batch, "size": args.size,
              "ms_per_batch_median": round(statistics.median(times), 1), "ms_per_batch_min": round(min(times), 1)}
    if device.type == "cuda":
        result["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    else:
        result["threads"] = torch.get_num_threads()
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(torch.device("cpu"), "torch", args)]
    if torch.cuda.is_available():
        results.append(measure(torch.device("cuda"), "torch", args))
        try:
            import nvdiffrast.torch  # noqa: F401

            results.append(measure(torch.device("cuda"), "nvdiffrast", args))
        except ImportError:
            results.append({"device": "cuda", "backend": "nvdiffrast", "skipped": "nvdiffrast not installed"})
    print(json.dumps({"measured": results, "not_measured": REFERENCE}, indent=2))


if __name__ == "__main__":
    main()
