"""How much of a face's reflectance does the image hold, and how well must the geometry be registered to read it?
Prints one JSON object.

    python benchmarks/reflectance_ceiling.py --checkpoint runs/x --data data/synth_test

On a synthetic set (python -m jobs.synthetic), divides each image by the face's shading (the face rendered with a
white reflectance) and unwraps it into UV: the reflectance the image shows, without any network. Done at the true
geometry and light, that bounds what a reflectance estimator can read from the image; done at the checkpoint's
estimated pose and shape (each alone, then both, then with its estimated light too), it measures what
misregistration costs. Every row is the benchmark's reflectance error (jobs.synthetic_eval: mean absolute error
after the best per-channel gain) on the texels the image sees at that geometry, beside a flat map's on the same
texels; the checkpoint's own reflectance is scored on the texels its geometry sees. The "whole map" rows fill the
hidden texels from their mirror image (else the mean) and score the whole covered map, as the benchmark does.
"""

import argparse
import json

import torch
import torch.nn.functional as F

from cest.checkpoint import load_model
from cest.eval.synthetic_metrics import reflectance_error
from cest.render.uv import flip_uv
from jobs.frames import frames_from_rows, read_clip_rows
from jobs.synthetic import read_ground_truth
from jobs.synthetic_eval import truth_tensors


def shown_reflectance(renderer, images, vertices, viewpoint, sh) -> tuple[torch.Tensor, torch.Tensor]:
    """(image / shading unwrapped into UV (B, 3, U, U), texels the image sees (B, 1, U, U)) at this geometry."""
    faces = renderer.rasterize(vertices, viewpoint)
    white = torch.ones(len(images), 3, renderer.uv_mapper.uv_size, renderer.uv_mapper.uv_size)
    texture, seen = renderer.unwrap(images, faces)
    shading, _ = renderer.unwrap(renderer.shade(faces, white, sh), faces)
    return texture / shading.clamp(min=1e-3), seen * renderer.uv_mapper.covered


def mirror_filled(reflectance: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Hidden texels from their mirror image where that is seen, else the seen texels' mean."""
    mean = (reflectance * seen).sum((2, 3), keepdim=True) / seen.sum((2, 3), keepdim=True).clamp(min=1)
    mirrored, mirror_seen = flip_uv(reflectance * seen), flip_uv(seen)
    return torch.where(seen.bool(), reflectance, torch.where(mirror_seen.bool(), mirrored, mean))


@torch.no_grad()
def ceiling(model, data_dir: str, clips_per_batch: int = 8) -> dict:
    renderer, morphable = model.renderer, model.morphable
    covered = renderer.uv_mapper.covered
    truth_by_key = read_ground_truth(data_dir)
    rows = list(read_clip_rows(data_dir))
    errors: dict[str, list[torch.Tensor]] = {}

    def add(name: str, predicted: torch.Tensor, truth: torch.Tensor, texels: torch.Tensor) -> None:
        errors.setdefault(name, []).append(reflectance_error(predicted, truth, texels)[0])
        errors.setdefault(name + " (flat map)", []).append(reflectance_error(torch.ones_like(truth), truth, texels)[0])

    for first in range(0, len(rows), clips_per_batch):
        group = rows[first:first + clips_per_batch]
        frames = frames_from_rows(group, model.config.image_size, max(r["num_frames"] for r in group))
        truth = truth_tensors([truth_by_key[r["segment_key"]] for r in group])
        uv_size = model.config.uv_size
        true_reflectance = F.interpolate(truth["reflectance"], size=(uv_size, uv_size), mode="area")
        true_vertices = morphable.shape(truth["alpha_identity"], truth["alpha_expression"])
        estimate = model(frames.images)
        geometries = {
            "true geometry and light": (true_vertices, truth["viewpoint"], truth["sh"]),
            "estimated pose, true shape and light": (true_vertices, estimate.viewpoint, truth["sh"]),
            "estimated shape, true pose and light": (estimate.vertices, truth["viewpoint"], truth["sh"]),
            "estimated geometry, true light": (estimate.vertices, estimate.viewpoint, truth["sh"]),
            "estimated geometry and light": (estimate.vertices, estimate.viewpoint, estimate.sh),
        }
        shown = {name: shown_reflectance(renderer, frames.images, *geometry) for name, geometry in geometries.items()}
        for name, (reflectance, seen) in shown.items():
            add(f"image / shading at {name}, seen texels", reflectance, true_reflectance, seen)
        whole_map = covered.expand_as(true_reflectance[:, :1])
        add("whole map: image / shading at true geometry and light, mirror-filled",
            mirror_filled(*shown["true geometry and light"]), true_reflectance, whole_map)
        add("the network's reflectance, texels its geometry sees", estimate.reflectance, true_reflectance,
            shown["estimated geometry and light"][1])
        add("whole map: the network's reflectance", estimate.reflectance, true_reflectance, whole_map)
    return {"images": len(torch.cat(next(iter(errors.values())))),
            "reflectance_error": {name: round(float(torch.cat(values).mean()), 4) for name, values in errors.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or directory")
    parser.add_argument("--data", required=True, help="a synthetic set (python -m jobs.synthetic)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.checkpoint)[0].eval()
    print(json.dumps(ceiling(model, args.data), indent=1))


if __name__ == "__main__":
    main()
