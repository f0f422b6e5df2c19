"""Throughput of the FAN landmark stage of `make preprocess` (pipelines/landmarks.py); prints one JSON object.

    python benchmarks/bench_fan.py [--device cuda] [--faces 256] [--batch-sizes 1 16 64 128] [--weights random]

Times FanLandmarker.landmarks_many (face_alignment's crop and heatmap decoding, the network on batches of
crops: what the tracking stage calls) at each batch size, and FanLandmarker.landmarks one face at a time
(face_alignment's own per-image path) as the reference. Faces are 256 px boxes in 360 x 640 frames; the
cost does not depend on the pixels, so random frames stand in for video.

--weights random writes a randomly initialised 2D FAN into a temporary torch hub cache (offline machines:
face-alignment otherwise downloads its weights on first use); the speed is that of the real network.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from pipelines.landmarks import FanLandmarker


def write_random_fan_weights(torch_home: Path) -> None:
    """A randomly initialised 2D FAN where face_alignment looks for its downloaded weights."""
    from face_alignment.api import models_urls
    from face_alignment.models import FAN

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(FAN(4).state_dict(), checkpoints / os.path.basename(urlparse(models_urls["2DFAN-4"]).path))


def faces(count: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(count)]
    left = rng.uniform(100, 280, count)
    top = rng.uniform(20, 80, count)
    boxes = np.stack([left, top, left + 256, top + 256], 1).astype(np.float32)
    return frames, boxes


def timed(function, repeats: int) -> float:
    """Median wall seconds of `function()` (which returns CPU numpy arrays, so the GPU has finished)."""
    function()  # warm-up: cuDNN algorithm choice, allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--faces", type=int, default=256, help="faces per timed call")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--single-faces", type=int, default=32, help="faces for the one-at-a-time reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", choices=("random", "cached"), default="random",
                        help="random: a randomly initialised FAN (offline); cached: face_alignment's own download")
    args = parser.parse_args()
    frames, boxes = faces(args.faces)
    with tempfile.TemporaryDirectory() as torch_home:
        if args.weights == "random":
            os.environ["TORCH_HOME"] = torch_home
            torch.manual_seed(0)
            write_random_fan_weights(Path(torch_home))
        result = {
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "weights": args.weights,
            "faces_per_call": args.faces,
            "faces_per_s": {},
        }
        # The 'folder' face detector loads no weights; boxes are given, as in the tracking stage.
        for batch_size in args.batch_sizes:
            fan = FanLandmarker(device=args.device, face_detector="folder", batch_size=batch_size)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = timed(lambda: fan.landmarks_many(frames, boxes), args.repeats)
            result["faces_per_s"][f"batched_{batch_size}"] = round(args.faces / seconds, 1)
            if args.device == "cuda":
                result.setdefault("peak_gpu_memory_mib", {})[f"batched_{batch_size}"] = round(
                    torch.cuda.max_memory_allocated() / 2**20, 1)
        single = list(zip(frames[: args.single_faces], boxes[: args.single_faces]))
        seconds = timed(lambda: [fan.landmarks(frame, box[None]) for frame, box in single], args.repeats)
        result["faces_per_s"]["one_at_a_time"] = round(len(single) / seconds, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
