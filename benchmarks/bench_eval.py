"""Reconstruction and evaluation throughput on this machine; prints one JSON object.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_eval.py [--images 32] [--sizes 224 64]

Measures, with an untrained model of the default widths at each image size (the cost does not depend on
the weights):
- model_images_per_s: the model alone (forward: viewpoint, crop, shape, rasterize, unwrap, reflectance,
  light) on batches of 16 crops, CPU (and CUDA when present);
- reconstruct_photo_s: `jobs.reconstruct` end to end for one AFLW2000 photo (450 x 450): read, dlib
  detection and landmarks, crop, model, mesh + GLB + overlay + preview + JSON written;
- evaluate: `jobs.eval`'s work for --images AFLW2000-sized images (the asset sample repeated), split into
  preparing (read, .mat, oracle crop, dlib detection and detected crop) and scoring (the model on both
  crops, NME, photometric), measured, and the time for 1,000 images extrapolated linearly from it
  (labelled as such; both parts are per-image work with no warm-up beyond the first batch).
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cest.assets import fetch_dir
from cest.checkpoint import save_checkpoint
from cest.config import Config, ModelConfig
from cest.model import CESTModel
from cest.morphable import load_sfm
from jobs import eval as evaluation
from jobs.face_reconstruction import Reconstructor, reconstruct


def uv_size_for(image_size: int) -> int:
    return max(32, round(image_size * 4 / 7 / 32) * 32)


def model_throughput(reconstructor: Reconstructor, size: int, batch: int = 16, repeats: int = 3) -> float:
    images = torch.rand(batch, 3, size, size, device=reconstructor.device)
    reconstructor.estimate(images)  # warm-up
    times = []
    for _ in range(repeats):
        if reconstructor.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        reconstructor.estimate(images)
        if reconstructor.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="AFLW2000-sized images for the evaluation timing")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    args = parser.parse_args()
    morphable = load_sfm()
    aflw = fetch_dir("aflw2000_sample")
    items = evaluation.aflw2000_items(aflw)
    items = [items[i % len(items)] for i in range(args.images)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "processor": platform.processor(), "cuda": torch.cuda.get_device_name(0)
                           if torch.cuda.is_available() else None}, "sizes": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            config = Config(model=ModelConfig(image_size=size, uv_size=uv_size_for(size)))
            checkpoint = save_checkpoint(Path(scratch) / f"m{size}", CESTModel(config.model, morphable), config)
            row = {}
            for device in devices:
                reconstructor = Reconstructor(checkpoint, device, morphable)
                row[f"model_images_per_s_{device}"] = round(model_throughput(reconstructor, size), 2)
            reconstructor = Reconstructor(checkpoint, "cpu", morphable)
            photo = Path(items[0]["image_path"])
            reconstruct(photo, reconstructor, Path(scratch) / "warm")
            start = time.perf_counter()
            reconstruct(photo, reconstructor, Path(scratch) / "photo")
            row["reconstruct_photo_s_cpu"] = round(time.perf_counter() - start, 3)

            start = time.perf_counter()
            prepared = [evaluation.prepare_aflw2000(item) for item in items]
            prepare_s = time.perf_counter() - start
            for device in devices:
                scorer = evaluation.Scorer(str(checkpoint), device)
                start = time.perf_counter()
                for first in range(0, len(prepared), 16):
                    scorer(evaluation.stack_rows(prepared[first:first + 16]))
                score_s = time.perf_counter() - start
                row[f"evaluate_{device}"] = {
                    "images": len(prepared), "prepare_s": round(prepare_s, 2), "score_s": round(score_s, 2),
                    "extrapolated_s_per_1000_images": round((prepare_s + score_s) * 1000 / len(prepared), 1)}
            results["sizes"][str(size)] = row
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
