"""Score a checkpoint on a synthetic set: `python -m jobs.synthetic_eval --checkpoint runs/x --data data/synth_test
--output reports/x` writes x.json (every summary, CED included), x.md (a table) and x_grid.png (estimated and true
reflectance and shading of four images spread over the set's yaw range).

Images, masks and landmarks come from the set's clip rows through the training side's reader
(`jobs.frames.frames_from_rows`, resized to the model's image size); the ground truth from its sidecar. The true
faces are rasterized with the model's own renderer at the model's size, so normals and masks compare pixel
for pixel. Metrics: `cest.eval.synthetic_metrics`. The model runs in eval mode (BatchNorm running statistics).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cest.eval.synthetic_metrics import (
    YAW_BINS,
    landmark_nme,
    normal_angle_error_deg,
    photometric_mae,
    reflectance_error,
    rotation_error_deg,
    sh_error,
    shading_std_ratio,
    summarise,
    vertex_error_mm,
)
from cest.visualize import face_panels, panel_grid
from jobs.face_reconstruction import enlarged
from jobs.frames import frames_from_rows, read_clip_rows
from jobs.synthetic import read_ground_truth

METRICS = {  # name -> (column title, unit)
    "vertex_mm": ("3D vertex error", "mm"),
    "landmark_nme": ("68-landmark NME", "fraction"),
    "rotation_deg": ("pose error", "degrees"),
    "normal_deg": ("normal angle error", "degrees"),
    "reflectance_mae": ("reflectance error (per-channel gain)", "[0, 1]"),
    "sh_relative": ("SH error (same gain)", "relative"),
    "shading_std_ratio": ("shading std / true", "ratio"),
    "photometric_mae": ("photometric MAE in the mask", "0-255"),
}


@torch.no_grad()
def true_faces(model, truth: dict):
    """(vertices, RasterizedFaces) of the true faces, rasterized by the model's renderer at its size."""
    vertices = model.morphable.shape(truth["alpha_identity"], truth["alpha_expression"])
    return vertices, model.renderer.rasterize(vertices, truth["viewpoint"])


@torch.no_grad()  # scores only: a graph here cost memory and time (and training's curves call it too)
def score_batch(model, images, masks, landmarks, truth: dict, true_viewpoint: bool = False) -> dict[str, torch.Tensor]:
    """Per-image metrics (B,) of one batch; `truth` holds tensors viewpoint, alpha_*, sh, reflectance. With
    `true_viewpoint` the model is given the true viewpoint (the untrained model then is the mean face at the
    true pose: the baseline of the shape and landmark metrics that pose errors cannot inflate)."""
    morphable = model.morphable
    estimate = model(images, truth["viewpoint"] if true_viewpoint else None)
    true_vertices, true_rasterized = true_faces(model, truth)
    uv_size = model.config.uv_size
    true_reflectance = F.interpolate(truth["reflectance"], size=(uv_size, uv_size), mode="area")
    reflectance, gain = reflectance_error(estimate.reflectance, true_reflectance, model.renderer.uv_mapper.covered)
    return {
        "vertex_mm": vertex_error_mm(estimate.vertices, true_vertices, float(morphable.unit_scale_mm)),
        "landmark_nme": landmark_nme(estimate.landmarks, landmarks),
        "rotation_deg": rotation_error_deg(estimate.viewpoint[:, 1:4], truth["viewpoint"][:, 1:4]),
        "normal_deg": normal_angle_error_deg(estimate.faces.pixel_normals, true_rasterized.pixel_normals,
                                             true_rasterized.face_mask * estimate.faces.face_mask),
        "reflectance_mae": reflectance,
        "sh_relative": sh_error(estimate.sh, truth["sh"], gain),
        "shading_std_ratio": shading_std_ratio(
            model.render(estimate, torch.ones_like(estimate.reflectance)), masks * estimate.faces.face_mask,
            model.renderer.shade(true_rasterized, torch.ones_like(estimate.reflectance), truth["sh"]),
            true_rasterized.face_mask),
        "photometric_mae": photometric_mae(images, model.render(estimate), masks * estimate.faces.face_mask),
    }


def truth_tensors(truths: list[dict], with_reflectance: bool = True) -> dict[str, torch.Tensor]:
    """Per-frame ground truth of a list of clips, frames in row order; without the reflectance maps (a copy per
    frame, 200 KB each at UV 128) when `with_reflectance` is false."""
    frames = [len(t["viewpoint"]) for t in truths]
    geometry = {
        "viewpoint": torch.from_numpy(np.concatenate([t["viewpoint"] for t in truths])),
        "yaw": torch.from_numpy(np.concatenate([t["yaw_pitch_roll"][:, 0] for t in truths])),
        "alpha_identity": torch.from_numpy(np.concatenate([np.tile(t["alpha_identity"], (n, 1))
                                                           for t, n in zip(truths, frames)])),
        "alpha_expression": torch.from_numpy(np.concatenate([t["alpha_expression"] for t in truths])),
        "sh": torch.from_numpy(np.concatenate([t["sh"] for t in truths])),
    }
    if not with_reflectance:
        return geometry
    return geometry | {"reflectance": torch.from_numpy(np.stack([t["reflectance"] for t, count in zip(truths, frames)
                                                                for _ in range(count)]))}


def evaluate(model, data_dir: str | Path, clips_per_batch: int = 8, true_viewpoint: bool = False) -> dict:
    """Every metric's summary on the whole set, plus the image count and the time taken (`score_batch`)."""
    model.eval()
    truth_by_key = read_ground_truth(data_dir)
    values: dict[str, list[torch.Tensor]] = {name: [] for name in METRICS}
    yaws = []
    start = time.perf_counter()
    rows = list(read_clip_rows(data_dir))
    for first in range(0, len(rows), clips_per_batch):
        group = rows[first:first + clips_per_batch]
        frames = frames_from_rows(group, model.config.image_size, max(r["num_frames"] for r in group))
        truth = truth_tensors([truth_by_key[r["segment_key"]] for r in group])
        scores = score_batch(model, frames.images, frames.masks, frames.landmarks, truth, true_viewpoint)
        for name, value in scores.items():
            values[name].append(value)
        yaws.append(truth["yaw"])
    seconds = time.perf_counter() - start
    yaw = torch.cat(yaws)
    return {
        "images": int(yaw.numel()),
        "seconds": round(seconds, 2),
        "seconds_per_1000_images": round(seconds / yaw.numel() * 1000, 1),
        "metrics": {name: summarise(torch.cat(value), yaw) for name, value in values.items()},
    }


GRID_PANELS = ("input", "overlay", "reflectance", "true reflectance", "shading", "true shading")


@torch.no_grad()
def qualitative_grid(model, data_dir: str | Path, count: int = 4) -> np.ndarray:
    """Rows: `count` images of the set spread over its yaw range; columns: GRID_PANELS, the estimate's
    reflectance and shading (the face rendered white under the estimated light) beside the true ones, the
    disentanglement the metrics score. uint8 RGB, enlarged for viewing."""
    model.eval()
    rows = list(read_clip_rows(data_dir))
    truth_by_key = read_ground_truth(data_dir)
    frames = frames_from_rows(rows, model.config.image_size, max(r["num_frames"] for r in rows))
    truth = truth_tensors([truth_by_key[r["segment_key"]] for r in rows])
    chosen = truth["yaw"].argsort()[np.linspace(0, len(truth["yaw"]) - 1, count).round().astype(int)]
    images, truth = frames.images[chosen], {name: value[chosen] for name, value in truth.items()}
    estimate = model(images)
    panels = face_panels(model, images, estimate, ("input", "overlay", "reflectance", "shading"))
    size = model.config.image_size
    panels["true reflectance"] = F.interpolate(truth["reflectance"], size=(size, size), mode="area")
    white = torch.ones_like(estimate.reflectance)
    panels["true shading"] = model.renderer.shade(true_faces(model, truth)[1], white, truth["sh"]).clamp(0, 1)
    return enlarged(panel_grid(panels, GRID_PANELS), rows=count)


def markdown_table(report: dict) -> str:
    bins = [f"{low}-{min(high, 90):g}" for low, high in YAW_BINS]
    lines = ["| metric | unit | mean | median | " + " | ".join(f"mean at yaw {b}" for b in bins) + " |",
             "|---|---|---|---|" + "---|" * len(bins)]
    for name, (title, unit) in METRICS.items():
        summary = report["metrics"][name]
        cells = [f"{summary['per_yaw_bin'][b]:.4g}" if summary["per_yaw_bin"][b] is not None else "-" for b in bins]
        lines.append(f"| {title} | {unit} | {summary['mean']:.4g} | {summary['median']:.4g} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt or its directory")
    parser.add_argument("--data", type=Path, required=True, help="a set written by `python -m jobs.synthetic`")
    parser.add_argument("--output", type=Path, required=True, help="report path without extension (.json, .md)")
    args = parser.parse_args(argv)
    from cest.checkpoint import CheckpointError, load_model

    if not (args.data / "ground_truth").is_dir():
        print(f"error: {args.data} holds no ground_truth/ (write one with `python -m jobs.synthetic`)",
              file=sys.stderr)
        return 2
    try:
        model, _, _ = load_model(args.checkpoint, "cpu")
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = evaluate(model, args.data)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    args.output.with_suffix(".md").write_text(table)
    grid_path = Path(f"{args.output}_grid.png")
    cv2.imwrite(str(grid_path), cv2.cvtColor(qualitative_grid(model, args.data), cv2.COLOR_RGB2BGR))
    print(table + f"{report['images']} images, {report['seconds_per_1000_images']} s per 1,000 images; "
          f"panels ({' | '.join(GRID_PANELS)}): {grid_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
