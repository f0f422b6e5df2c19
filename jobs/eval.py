"""Evaluate trained models: AFLW2000-3D landmark NME, the photometric error and the shape benchmarks (MICC
Florence, NoW, REALY), logged into MLflow.

    python -m jobs.eval --run-id RUN [--run-id RUN2 ...] | --checkpoint CKPT ... | --latest-ablations
                        [--aflw2000 DIR] [--images DIR | --clips PREPROCESS_OUTPUT] [--micc DIR] [--micc-rendered DIR]
                        [--now DIR] [--realy IMAGES [--realy-template REALY/data/HIFI3D.obj]] --output DIR [--ray]

Shape benchmarks (jobs.eval_shape, protocols in cest.eval.micc / micc_rendered / now / realy, docs/eval.md): MICC
Florence in mm per setting and by the paper's rendered NME protocol, NoW's validation split scored locally and
exported in the challenge layout (now_predictions/), REALY meshes and keypoint file for submission (realy/). A
missing or malformed folder stops the job before any model runs, with one line naming what is missing (exit
status 2); so does a landmark model file that cannot be fetched (every input but --clips has its faces found).

AFLW2000-3D (a folder of imageNNNNN.jpg + .mat): every image is cropped twice with the pipeline's alignment
(`pipelines.align`, the crop the model was trained on): from the ground-truth landmarks (the "oracle" crop,
as 3DDFA's protocol does) and from the landmarks the preprocessing pipeline's default backend detects (what a
user gets, `pipelines.landmarks.make_landmarker`; images without a detection are counted and left out). The model's 68 projected landmarks are mapped back to the image and scored with
`cest.eval.metrics` (3DDFA protocol: NME by yaw bin, balanced mean, all 68 and inner 51 points).
With --bfm-dir (the user's BFM 2009 and 3DDFA expression files, never shipped) also the dense NME of the
oracle crops (`cest.eval.dense`: the paper's per-vertex metric after ICP, its region, alignment and the ground
truth's keypoint self-test stated in metrics.json).
Photometric error (App. B.5): MAE (0-255) between each crop and its overlay, inside the rendered face and
over the crop, for a folder of photos (detected crops) or a preprocess output's clip frames (its own crops).
With --clips, clip files and rows that cannot be read are skipped, named and listed in OUTPUT/skipped.jsonl
(jobs/data_errors.py); the job fails with one error line only when nothing is readable or more than
--max-skipped-fraction (default data.max_skipped_fraction) of the rows are skipped.

Outputs in --output: metrics.json (per model), comparison.md (a table of the models), ced_oracle.png and
ced_detected.png (cumulative error curves of the 68-point NME), LABEL_grid.png (per model: input, overlay,
reflectance, illuminated texture, geometry, illumination, relit under three lights; Fig. 4 and 8).
Every evaluated MLflow run gets the comparison table's numbers and the shape benchmarks' (mlflow_metrics;
named eval/<benchmark>/<key>, the headline scores also as
eval/aflw2000_nme68_pct and eval/photometric_mae: jobs/tracking.py) and these files (artifact folder "eval");
a bare checkpoint gets a new run tagged cest.role=evaluation. The parent of evaluated ablation children (tag
cest.role=ablations) gets the comparison: comparison/evaluation.html (the table, shown by the MLflow UI),
comparison/comparison.md and comparison/ced_oracle.png.

With --ray the scoring runs as Ray Data batch inference: crops are made by a map over the inputs, the model
runs in actor instances (`map_batches` with a class; one GPU each when the cluster has GPUs). The shape
benchmarks' reconstruction too (--micc, --now, --realy; jobs.eval_shape), their scoring stays in this process.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.io import loadmat

from cest.checkpoint import CheckpointError
from cest.eval.files import DatasetError
from cest.eval.dense import METHOD as DENSE_METHOD
from cest.eval.dense import BFMGroundTruth, dense_nme, densify
from cest.eval.metrics import INNER, aflw2000_landmarks, aflw2000_summary, landmark_nme, photometric_error
from cest.visualize import face_panels, overlay, panel_grid
from cest.eval.micc import SETTINGS as MICC_SETTINGS
from jobs.face_reconstruction import (CROP_SIZE, IMAGE_SUFFIXES, Reconstructor, ReconstructError, crop_photo,
                                     crop_with_landmarks, enlarged, fetch_landmark_models, invert_affine,
                                     model_images, read_image, to_model_pixels)
from jobs.eval_shape import ShapeInputs, plot_shape_ced, shape_benchmarks, shape_tables

EVALUATION_ROLE = "evaluation"
GRID_IMAGES = 4  # images per qualitative grid
CED_MAX_NME_PCT = 10.0


@dataclass
class Candidate:
    label: str  # the MLflow run's name and id prefix (demo-cest-25817c5b), or the checkpoint's path
    checkpoint: Path
    run_id: str | None = None


# ---------------------------------------------------------------------------------------------- inputs


def aflw2000_items(folder: Path) -> list[dict]:
    items = [{"name": jpg.stem, "image_path": str(jpg), "mat_path": str(jpg.with_suffix(".mat"))}
             for jpg in sorted(folder.glob("*.jpg")) if jpg.with_suffix(".mat").is_file()]
    if not items:
        raise ReconstructError(f"no AFLW2000-3D .jpg + .mat pairs in {folder}")
    return items


_LANDMARKER = None


def landmarker():
    """One landmarker per process (worker), made on first use: the preprocessing pipeline's default."""
    global _LANDMARKER
    if _LANDMARKER is None:
        from pipelines.config import PreprocessConfig
        from pipelines.landmarks import make_landmarker

        _LANDMARKER = make_landmarker(PreprocessConfig())
    return _LANDMARKER


def prepare_aflw2000(item: dict) -> dict:
    """Oracle and detected crops (224) with their source->crop matrices, the ground truth and the yaw."""
    image = read_image(Path(item["image_path"]))
    mat = loadmat(item["mat_path"])
    landmarks, yaw = aflw2000_landmarks(mat["pt3d_68"]), float(mat["Pose_Para"][0][1])
    oracle = crop_with_landmarks(image, landmarks)
    try:
        detected = crop_photo(image, landmarker())
        found = True
    except ReconstructError:
        detected, found = oracle, False
    return {"name": item["name"], "gt": landmarks.astype(np.float32), "yaw": yaw,
            "height": image.shape[0], "shape_para": mat["Shape_Para"].reshape(-1).astype(np.float64),
            "exp_para": mat["Exp_Para"].reshape(-1).astype(np.float64),
            "pose_para": mat["Pose_Para"].reshape(-1).astype(np.float64),
            "pt3d_68": mat["pt3d_68"].astype(np.float64),
            "oracle_crop": oracle.crops[0], "oracle_matrix": oracle.matrices[0],
            "detected_crop": detected.crops[0], "detected_matrix": detected.matrices[0], "detected_found": found}


def photo_items(folder: Path) -> list[dict]:
    items = [{"name": p.name, "image_path": str(p)} for p in sorted(folder.iterdir())
             if p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise ReconstructError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return items


def prepare_photo(item: dict) -> dict:
    try:
        crops = crop_photo(read_image(Path(item["image_path"])), landmarker())
        return {"name": item["name"], "photo_crop": crops.crops[0], "photo_found": True}
    except ReconstructError:
        return {"name": item["name"], "photo_crop": np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8),
                "photo_found": False}


def clip_frame_rows(output_dir: Path, skips=None) -> list[dict]:
    """Every frame of a preprocess output as a prepared photometric row (the pipeline's own 224 crops); files and
    rows that cannot be read are skipped into `skips` (a jobs.data_errors.SkipList; DataError when too many)."""
    from jobs.frames import read_clip_rows

    rows = []
    for clip in read_clip_rows(output_dir, skips):
        for index, frame in enumerate(clip["frames"]):
            if frame.shape[:2] != (CROP_SIZE, CROP_SIZE):
                frame = cv2.resize(frame, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
            rows.append({"name": f"{clip['segment_key']}/{index}", "photo_crop": frame, "photo_found": True})
    if not rows:
        raise ReconstructError(f"no clip frames in {output_dir}")
    return rows


# --------------------------------------------------------------------------------------------- scoring


class Scorer:
    """Scores batches of prepared rows (numpy columns) with one model; a Ray Data actor or a plain object."""

    def __init__(self, checkpoint: str, device: str | None = None, bfm_dir: str | None = None):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.reconstructor = Reconstructor(checkpoint, device)
        self.bfm = BFMGroundTruth.from_dir(bfm_dir) if bfm_dir else None

    def _dense(self, batch: dict, estimate, back: np.ndarray) -> dict:
        """Dense NME of each image (cest.eval.dense) and the ground truth's keypoint self-test (pixels)."""
        pixels = estimate.faces.pixels.cpu().double().numpy()
        triangles = self.reconstructor.model.morphable.triangles.cpu().numpy()
        landmark_indices = self.reconstructor.model.morphable.landmark_indices.cpu().numpy()
        nme, selftest = [], []
        for index in range(len(pixels)):
            linear, offset = back[index, :, :2], back[index, :, 2]
            # Into the source image: x, y through the inverse crop; z (pixels, away from the camera) turned
            # toward the viewer and scaled like x and y.
            points = np.concatenate([pixels[index, :, :2] @ linear.T + offset,
                                     -pixels[index, :, 2:] * np.sqrt(abs(np.linalg.det(linear)))], axis=1)
            mat = {"Shape_Para": batch["shape_para"][index], "Exp_Para": batch["exp_para"][index],
                   "Pose_Para": batch["pose_para"][index], "pt3d_68": batch["pt3d_68"][index]}
            truth = self.bfm.image_vertices(mat, int(batch["height"][index]))
            selftest.append(self.bfm.keypoint_error(truth, mat))
            nme.append(dense_nme(densify(points, triangles), points[landmark_indices], truth, self.bfm.keypoints))
        return {"dense_nme": np.asarray(nme), "dense_selftest_px": np.asarray(selftest)}

    def _estimate(self, crops: np.ndarray):
        images = model_images(np.asarray(crops, np.uint8), self.reconstructor.image_size).to(self.reconstructor.device)
        return images, self.reconstructor.estimate(images)

    def _photometric(self, images, estimate) -> dict:
        error = photometric_error(images, overlay(self.reconstructor.model, images, estimate),
                                  estimate.faces.face_mask)
        return {"photometric_face": error["face"].cpu().numpy(), "photometric_crop": error["crop"].cpu().numpy()}

    def __call__(self, batch: dict) -> dict:
        result = {"name": np.asarray(batch["name"])}
        for kind in ("oracle", "detected"):
            if f"{kind}_crop" not in batch:
                continue
            images, estimate = self._estimate(batch[f"{kind}_crop"])
            to_model = to_model_pixels(np.asarray(batch[f"{kind}_matrix"], np.float64), self.reconstructor.image_size)
            back = invert_affine(to_model)
            landmarks = estimate.landmarks[..., :2].cpu().double().numpy()
            in_source = np.einsum("tij,tnj->tni", back[:, :, :2], landmarks) + back[:, None, :, 2]
            gt = np.asarray(batch["gt"], np.float64)
            valid = np.ones(len(gt), bool) if kind == "oracle" else np.asarray(batch["detected_found"], bool)
            result[f"{kind}_nme68"] = np.where(valid, landmark_nme(in_source, gt), np.nan)
            result[f"{kind}_nme51"] = np.where(valid, landmark_nme(in_source, gt, INNER), np.nan)
            for key, value in self._photometric(images, estimate).items():
                result[f"{kind}_{key}"] = np.where(valid, value, np.nan)
            if self.bfm is not None and kind == "oracle":
                result.update({f"oracle_{key}": value for key, value in self._dense(batch, estimate, back).items()})
        if "gt" in batch:
            result["yaw"] = np.asarray(batch["yaw"], np.float64)
        if "photo_crop" in batch:
            images, estimate = self._estimate(batch["photo_crop"])
            valid = np.asarray(batch["photo_found"], bool)
            for key, value in self._photometric(images, estimate).items():
                result[f"photo_{key}"] = np.where(valid, value, np.nan)
        return result


def score_local(rows: list[dict], checkpoint: Path, batch_size: int, bfm_dir: Path | None = None) -> dict:
    scorer = Scorer(str(checkpoint), bfm_dir=str(bfm_dir) if bfm_dir else None)
    parts = [scorer(stack_rows(rows[start:start + batch_size])) for start in range(0, len(rows), batch_size)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def score_ray(items: list[dict], prepare, checkpoint: Path, batch_size: int, bfm_dir: Path | None = None) -> dict:
    """The same scoring as Ray Data batch inference: prepare in tasks, the model in actors (GPU when present)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    arguments = {"checkpoint": str(checkpoint), "bfm_dir": str(bfm_dir) if bfm_dir else None}
    dataset = ray.data.from_items(items).map(prepare).map_batches(
        Scorer, fn_constructor_kwargs=arguments, batch_size=batch_size, batch_format="numpy",
        concurrency=max(1, gpus) if gpus else 1, num_gpus=1 if gpus else 0)
    rows = dataset.take_all()
    return {key: np.asarray([row[key] for row in rows]) for key in rows[0]}


def stack_rows(rows: list[dict]) -> dict:
    return {key: np.stack([np.asarray(row[key]) for row in rows]) for key in rows[0]}


# ---------------------------------------------------------------------------------------------- report


def summarise(scores: dict) -> dict:
    metrics = {}
    for kind in ("oracle", "detected"):
        if f"{kind}_nme68" not in scores:
            continue
        found = ~np.isnan(scores[f"{kind}_nme68"])
        for points in ("68", "51"):
            metrics.update(aflw2000_summary(scores[f"{kind}_nme{points}"][found], scores["yaw"][found],
                                            prefix=f"aflw2000_{kind}_nme{points}"))
        metrics[f"aflw2000_{kind}_missed"] = int((~found).sum())
        metrics[f"aflw2000_{kind}_photometric_face"] = float(np.nanmean(scores[f"{kind}_photometric_face"]))
    if "oracle_dense_nme" in scores:
        metrics.update(aflw2000_summary(scores["oracle_dense_nme"], scores["yaw"], prefix="aflw2000_oracle_dense_nme"))
        metrics["aflw2000_dense_selftest_px_max"] = float(scores["oracle_dense_selftest_px"].max())
        metrics["aflw2000_dense_method"] = DENSE_METHOD
    if "photo_photometric_face" in scores:
        face = scores["photo_photometric_face"]
        metrics["photometric_mae_face"] = float(np.nanmean(face)) if np.isfinite(face).any() else None
        metrics["photometric_mae_crop"] = float(np.nanmean(scores["photo_photometric_crop"])) \
            if np.isfinite(face).any() else None
        metrics["photometric_images"] = int(np.isfinite(face).sum())
        metrics["photometric_missed"] = int((~np.isfinite(face)).sum())
    return metrics


TABLE_COLUMNS = (
    ("aflw2000_oracle_nme68_pct_balanced", "NME68 % (oracle, balanced)"),
    ("aflw2000_oracle_nme68_pct_0_30", "0-30"),
    ("aflw2000_oracle_nme68_pct_30_60", "30-60"),
    ("aflw2000_oracle_nme68_pct_60_90", "60-90"),
    ("aflw2000_oracle_nme51_pct_balanced", "NME51 % (oracle)"),
    ("aflw2000_oracle_dense_nme_pct_balanced", "dense NME % (oracle)"),
    ("aflw2000_detected_nme68_pct_balanced", "NME68 % (detected)"),
    ("aflw2000_detected_missed", "no face"),
    ("photometric_mae_face", "photometric MAE face"),
    ("photometric_mae_crop", "photometric MAE crop"),
)


def comparison_cells(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """The table of the models: column titles (those some model has) and one row of cells per model."""
    present = [(key, title) for key, title in TABLE_COLUMNS if any(key in m for m in results.values())]
    rows = [[label] + [("-" if metrics.get(key) is None else
                        f"{metrics[key]:.2f}" if isinstance(metrics[key], float) else str(metrics[key]))
                       for key, _ in present]
            for label, metrics in results.items()]
    return ["model"] + [title for _, title in present], rows


def comparison_table(results: dict[str, dict]) -> str:
    titles, rows = comparison_cells(results)
    lines = ["| " + " | ".join(titles) + " |", "|---|" + "---|" * (len(titles) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def comparison_html(results: dict[str, dict]) -> str:
    """The same table as a page the MLflow UI's artifact view shows."""
    from html import escape

    def cells(tag: str, values: list[str]) -> str:
        return "".join(f"<{tag}>{escape(value)}</{tag}>" for value in values)

    titles, rows = comparison_cells(results)
    return ("<!doctype html><meta charset=utf-8><style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
            "<table><tr>" + cells("th", titles) + "</tr>"
            + "".join("<tr>" + cells("td", row) + "</tr>" for row in rows) + "</table>\n")


def plot_ced(path: Path, curves: dict[str, np.ndarray], title: str) -> None:
    """NME CED of each model (per-image NME fractions, NaN where no face); the mean NME in the legend."""
    from jobs.plots import save_ced

    # 0-10 % as published curves; wider when a model's errors go beyond (an early checkpoint).
    upper = max(CED_MAX_NME_PCT, 105 * max(float(np.nanmax(nme)) for nme in curves.values()))
    save_ced(path, {label: (100 * nme[~np.isnan(nme)], 100 * float(np.nanmean(nme))) for label, nme in curves.items()},
             title, "NME 68 points (%)", "images (%)", upper)


def qualitative_grid(path: Path, checkpoint: Path, crops: np.ndarray) -> None:
    reconstructor = Reconstructor(checkpoint)
    images = model_images(crops, reconstructor.image_size)
    grid = panel_grid(face_panels(reconstructor.model, images, reconstructor.estimate(images)))
    grid = enlarged(grid, rows=len(crops))
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def mlflow_metrics(metrics: dict) -> dict[str, float]:
    """The numbers a run's MLflow metrics get: the comparison table's AFLW2000-3D and photometric columns (image
    counts and per-bin details stay in metrics.json, an artifact of the run, so the chart view shows scores),
    and every shape-benchmark number."""
    table = {key for key, _ in TABLE_COLUMNS}
    return {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))
            and (key in table or not key.startswith(("aflw2000_", "photometric_")))}


def log_to_mlflow(candidate: Candidate, metrics: dict, files: list[Path]) -> str:
    """Metrics (mlflow_metrics, named by jobs.tracking.eval_metric_names: eval/<benchmark>/..., the headline
    scores also eval/...) and files (artifact folder "eval") into the candidate's run; a new run for a bare
    checkpoint. Returns the run id."""
    from jobs.runs import client
    from jobs.tracking import (ABLATION_TAG, DEFAULT_EXPERIMENT, ROLE_TAG, eval_metric_names, experiment_id,
                               tracking_uri)

    mlflow_client = client()
    run_id = candidate.run_id
    if run_id is None:
        experiment = experiment_id(mlflow_client, tracking_uri(), DEFAULT_EXPERIMENT)
        # The UI groups runs by ablation: a baseline (the untrained or the published model) is a group of its
        # own, named by its file, beside the ablation children, not pooled with other bare checkpoints.
        name = f"{candidate.checkpoint.parent.name}/{candidate.checkpoint.name}"
        run_id = mlflow_client.create_run(experiment, tags={ROLE_TAG: EVALUATION_ROLE, ABLATION_TAG: name},
                                          run_name=f"eval {name}").info.run_id
        mlflow_client.log_param(run_id, "checkpoint", str(candidate.checkpoint))
        link_to_training_run(mlflow_client, run_id, candidate.checkpoint)
    for key, value in mlflow_metrics(metrics).items():
        for name in eval_metric_names(key):
            mlflow_client.log_metric(run_id, name, value)
    for file in files:
        mlflow_client.log_artifact(run_id, str(file), "eval")
    if candidate.run_id is None:
        mlflow_client.set_terminated(run_id)
    return run_id


def log_to_ablation_parents(candidates: list[Candidate], results: dict, output: Path) -> list[str]:
    """The evaluation table (HTML and markdown) and the oracle CED curves into the parent run of the evaluated
    ablation children (tag cest.role=ablations), artifact folder "comparison". Returns the parents' ids."""
    from jobs.runs import client
    from jobs.tracking import ABLATIONS_ROLE, ROLE_TAG

    mlflow_client = client()
    parents = {mlflow_client.get_run(c.run_id).data.tags.get("mlflow.parentRunId") for c in candidates if c.run_id}
    parents = [parent for parent in sorted(parents - {None})
               if mlflow_client.get_run(parent).data.tags.get(ROLE_TAG) == ABLATIONS_ROLE]
    if parents and any(key in metrics for metrics in results.values() for key, _ in TABLE_COLUMNS):
        (output / "evaluation.html").write_text(comparison_html(results))
        files = [output / name for name in ("evaluation.html", "comparison.md", "ced_oracle.png")]
        for parent in parents:
            for file in files:
                if file.is_file():
                    mlflow_client.log_artifact(parent, str(file), "comparison")
    return parents


def link_to_training_run(mlflow_client, evaluation_run: str, checkpoint: Path) -> None:
    """Tags that lead from a bare checkpoint's evaluation run to the run that trained it (the MLflow run its
    checkpoint names) and back, when that run is in this store."""
    from mlflow.exceptions import MlflowException

    from cest.checkpoint import load_checkpoint
    from jobs.tracking import EVALUATION_RUN_TAG, TRAINING_RUN_TAG

    trained_by = load_checkpoint(checkpoint)["mlflow_run_id"]
    if not trained_by:
        return
    mlflow_client.set_tag(evaluation_run, TRAINING_RUN_TAG, trained_by)
    try:
        mlflow_client.set_tag(trained_by, EVALUATION_RUN_TAG, evaluation_run)
    except MlflowException:  # trained against another store (the published model, a colleague's run)
        pass


# ------------------------------------------------------------------------------------------------ main


def evaluate(candidates: list[Candidate], output: Path, aflw2000: Path | None = None, images: Path | None = None,
             clips: Path | None = None, use_ray: bool = False, batch_size: int = 16, mlflow: bool = True,
             limit: int = 0, bfm_dir: Path | None = None, shape: ShapeInputs | None = None,
             max_skipped_fraction: float | None = None) -> dict:
    from cest.config import DataConfig
    from jobs.data_errors import SKIP_FILE, SkipList

    output.mkdir(parents=True, exist_ok=True)
    shape = shape or ShapeInputs()
    has_shape = shape.check(limit)  # every folder's layout before any model runs
    datasets = []  # (items, prepare) per data set; prepared once for every model (local) or per model (Ray)
    if aflw2000:
        datasets.append((aflw2000_items(aflw2000), prepare_aflw2000))
    if images:
        datasets.append((photo_items(images), prepare_photo))
    if clips:
        bound = DataConfig().max_skipped_fraction if max_skipped_fraction is None else max_skipped_fraction
        datasets.append((clip_frame_rows(clips, SkipList(str(output / SKIP_FILE), bound)), None))
    if not datasets and not has_shape:
        raise ReconstructError("nothing to evaluate on: give --aflw2000, --images, --clips, --micc, --micc-rendered, --now "
                               "or --realy")
    datasets = [(items[:limit] if limit else items, prepare) for items, prepare in datasets]
    prepared = [[prepare(item) if prepare else item for item in progress(items, "preparing")] if not use_ray
                else None for items, prepare in datasets]
    results, per_image, grids, shape_curves = {}, {}, {}, {}
    for candidate in candidates:
        merged, grid_crops = {}, None
        for (items, prepare), rows in zip(datasets, prepared):
            if use_ray and prepare is not None:
                scores = score_ray(items, prepare, candidate.checkpoint, batch_size, bfm_dir)
            else:
                scores = score_local(rows if rows is not None else items, candidate.checkpoint, batch_size, bfm_dir)
            merged.update(scores)
            if grid_crops is None:
                sample = (rows or [prepare(item) if prepare else item for item in items[:GRID_IMAGES]])[:GRID_IMAGES]
                grid_crops = np.stack([row.get("oracle_crop", row.get("photo_crop")) for row in sample])
        metrics = summarise(merged) if datasets else {}
        if has_shape:
            found, shape_curves[candidate.label] = shape_benchmarks(Reconstructor(candidate.checkpoint), shape, output,
                                                                   candidate.label, use_ray, batch_size)
            metrics.update(found)
        results[candidate.label] = metrics
        per_image[candidate.label] = merged
        if grid_crops is not None:
            grids[candidate.label] = output / f"{candidate.label.replace('/', '_')[-48:]}_grid.png"
            qualitative_grid(grids[candidate.label], candidate.checkpoint, grid_crops)
    files = [output / "metrics.json", output / "comparison.md"]
    (output / "metrics.json").write_text(json.dumps(results, indent=1))
    (output / "comparison.md").write_text((comparison_table(results) if datasets else "") + shape_tables(results))
    for kind in ("oracle", "detected"):
        curves = {label: scores[f"{kind}_nme68"] for label, scores in per_image.items() if f"{kind}_nme68" in scores}
        if curves:
            plot_ced(output / f"ced_{kind}.png", curves, f"AFLW2000-3D, {kind} crops")
            files.append(output / f"ced_{kind}.png")
    shape_plots = [("now", "NoW validation: scan-to-mesh distance", 8.0, "mm"),
                   ("micc_rendered", "MICC renderings: NME", 10.0, "% of the outer interocular distance")] + [
        (f"micc_{key}", f"MICC {setting}: per-subject mean error", 4.0, "mm") for setting, key in MICC_SETTINGS.items()]
    for name, title, upper, unit in shape_plots:
        curves = {label: found[name] for label, found in shape_curves.items() if name in found}
        if curves:
            plot_shape_ced(output / f"ced_{name}.png", curves, title, upper, unit)
            files.append(output / f"ced_{name}.png")
    if mlflow:
        for candidate in candidates:
            grid = [grids[candidate.label]] if candidate.label in grids else []
            run_id = log_to_mlflow(candidate, results[candidate.label], files + grid)
            results[candidate.label]["mlflow_run_id"] = run_id
        log_to_ablation_parents(candidates, results, output)
        (output / "metrics.json").write_text(json.dumps(results, indent=1))
    return results


def progress(items: list, description: str):
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="image", file=sys.stderr, disable=len(items) < 20)


def candidates_from(args) -> list[Candidate]:
    from jobs.runs import download_checkpoint, latest_ablation_children, run_label

    run_ids = list(args.run_id or [])
    if args.latest_ablations:
        parent, children = latest_ablation_children()
        print(f"ablation run {parent}: evaluating its {len(children)} children")
        run_ids += children
    found = [Candidate(run_label(run_id), download_checkpoint(run_id), run_id) for run_id in run_ids]
    for path in args.checkpoint or []:
        found.append(Candidate(str(path), path))
    if not found:
        raise ReconstructError("no model: give --run-id, --checkpoint or --latest-ablations")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", action="append", help="an MLflow training run (repeatable)")
    parser.add_argument("--checkpoint", action="append", type=Path, help="a checkpoint file or directory (repeatable)")
    parser.add_argument("--latest-ablations", action="store_true",
                        help="the children of the latest MLflow run tagged cest.role=ablations")
    parser.add_argument("--aflw2000", type=Path, help="AFLW2000-3D folder (imageNNNNN.jpg + .mat)")
    parser.add_argument("--bfm-dir", type=Path, help="BFM 2009 + 3DDFA expression files for the dense NME "
                        "(01_MorphableModel.mat, Model_Expression.mat, keypoints, BFM_exp_idx.mat); see docs/eval.md")
    parser.add_argument("--images", type=Path, help="a folder of photos for the photometric error")
    parser.add_argument("--clips", type=Path, help="a preprocess output (clip Parquet) for the photometric error")
    parser.add_argument("--micc", type=Path, help="MICC Florence folder (subject_NN/Video, subject_NN/Model); docs/eval.md")
    parser.add_argument("--micc-frames", type=int, default=50,
                        help="decode at most this many frames per MICC video; identity averaged over the face track")
    parser.add_argument("--micc-rendered", type=Path, help="MICC Florence folder (subject_NN/Model scans only): the "
                        "CEST paper's protocol, NME on renderings of the scans over its pose grid; docs/eval.md")
    parser.add_argument("--now", type=Path, help="NoW folder (imagepathsvalidation.txt, NoW_Dataset, scans, "
                        "scans_lmks_onlypp): validation scores and the challenge export")
    parser.add_argument("--realy", type=Path, help="a folder of REALY's images: meshes for submission")
    parser.add_argument("--realy-template", type=Path, help="a REALY template .obj with its 85-keypoint .txt "
                        "beside it (REALY/data/HIFI3D.obj): writes the SFM's keypoint file")
    parser.add_argument("--max-skipped-fraction", type=float, help="--clips: share of clip rows that may be skipped "
                        "as unreadable before the job stops (default: data.max_skipped_fraction of cest/config.py); "
                        "skips are listed in OUTPUT/skipped.jsonl")
    parser.add_argument("--output", type=Path, default=Path("eval"))
    parser.add_argument("--ray", action="store_true", help="score with Ray Data batch inference (ray.init())")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per data set (0: all)")
    parser.add_argument("--no-mlflow", action="store_true", help="write files only")
    args = parser.parse_args(argv)
    from cest.assets import AssetError
    from jobs.data_errors import DataError
    from jobs.runs import RunError

    try:
        # Every input but --clips (the pipeline's own crops) has its faces found: the landmark model files are
        # fetched first, so that a missing one is one error line before any checkpoint download or Ray start.
        if any((args.aflw2000, args.images, args.micc, args.micc_rendered, args.now, args.realy)):
            fetch_landmark_models()
        candidates = candidates_from(args)
        if args.ray:
            import ray

            ray.init()
        try:
            shape = ShapeInputs(args.micc, args.now, args.realy, args.realy_template, args.micc_frames, args.micc_rendered)
            evaluate(candidates, args.output, args.aflw2000, args.images, args.clips, args.ray,
                     args.batch_size, not args.no_mlflow, args.limit, args.bfm_dir, shape, args.max_skipped_fraction)
        finally:
            if args.ray:
                ray.shutdown()
    except (ReconstructError, CheckpointError, RunError, FileNotFoundError, DatasetError, DataError,
            AssetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print((args.output / "comparison.md").read_text())
    print(f"wrote {args.output}/metrics.json, comparison.md, CED curves, grids and shape exports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
