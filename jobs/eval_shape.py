"""The shape benchmarks of `python -m jobs.eval` (--micc, --now, --realy): reconstruct, export, score with the
protocols in cest.eval (micc, now, realy), tables beside the published anchors, CED curves.

Shapes are neutral: the identity coefficients with zero expression (NoW's maintainers advise it for its
neutral scans; MICC and REALY scans are neutral too), in millimetres (model units x the morphable model's
`unit_scale_mm`). MICC: one shape per video from the identity coefficients averaged over every frame of the
longest face track among the first --micc-frames decoded frames. NoW and REALY: one shape per image (the
pipeline's dlib crop; images without a detected face are counted as missed and left out).

Reconstruction: every photo and video of --micc, --now and --realy is cropped (`crops_of`) and its crops'
identity coefficients estimated (`identity_coefficients`), in this process or, with --ray, as Ray Data batch
inference: a flat_map over the files makes the crops, `IdentityEstimator` actors (map_batches; the checkpoint
loaded once per actor, one GPU each when the cluster has GPUs) return each crop's coefficients. Either way the
coefficients come back to this process, which averages them per photo or video into the shape and scores it
(ICP and distances; small next to the reconstruction). --micc-rendered renders its images and reconstructs
them in this process.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cest.eval import micc, micc_rendered, now, realy
from cest.eval.files import read_coloured_mesh, read_mesh, require_dir, write_obj
from jobs.face_reconstruction import (Reconstructor, ReconstructError, crop_photo, crop_video, model_images,
                                     read_image)

# Published anchors (cited in docs/eval.md). NoW: the NoW test split's leaderboard, median / mean / std mm
# (local scores are on the validation split, which is not the same images).
NOW_ANCHORS = (("DECA (Feng et al. 2021)", 1.09, 1.38, 1.18),
               ("Deep3DFaceRecon (Deng et al. 2019)", 1.11, 1.41, 1.21),
               ("3DDFA_V2 (Guo et al. 2020)", 1.23, 1.57, 1.39))
REALY_ANCHOR = "3DDFA_V2 1.926 (frontal, REALY's average NMSE over its regions)"
MICC_NOTE = ("The CEST paper's MICC numbers (CEST 3.14, PRN 3.76, 3DDFA 6.38) are its rendered NME protocol, "
             "not this mm protocol; no mm anchor is quoted here.")
# The CEST paper, Sec. 4.4 (NME %, its rendered protocol; VRN's 19,618-vertex set, see cest.eval.micc_rendered).
MICC_RENDERED_ANCHORS = (("CEST (paper)", 3.14), ("N3DMM (Tran et al. 2019)", 3.20), ("PRN (Feng et al. 2018)", 3.76),
                         ("3DDFA (Zhu et al. 2016)", 6.38))
NOW_CED_MAX_MM = 8.0  # now_evaluation's plot range
BATCH = 16


@dataclass
class ShapeInputs:
    micc: Path | None = None
    now: Path | None = None
    realy: Path | None = None  # a folder of REALY's images
    realy_template: Path | None = None  # a REALY template .obj with its .txt beside it (e.g. REALY/data/HIFI3D.obj)
    micc_frames: int = 50
    micc_rendered: Path | None = None  # a MICC folder scored by the paper's rendered protocol (scans only)
    checked: dict = field(default_factory=dict)

    def check(self, limit: int = 0) -> bool:
        """Read every given folder's layout (DatasetError naming what is missing) before any model runs."""
        cut = (lambda items: items[:limit]) if limit else (lambda items: items)
        if self.micc:
            self.checked["micc"] = cut(micc.micc_subjects(self.micc))
        if self.micc_rendered:
            self.checked["micc_rendered"] = cut(micc.micc_subjects(self.micc_rendered, videos=False))
        if self.now:
            self.checked["now"] = cut(now.now_items(self.now))
        if self.realy:
            from jobs.eval import photo_items

            self.checked["realy"] = cut(photo_items(require_dir(self.realy, "REALY")))
            if self.realy_template and not Path(self.realy_template).with_suffix(".txt").is_file():
                from cest.eval.files import DatasetError

                raise DatasetError(f"REALY: missing {Path(self.realy_template).with_suffix('.txt')}")
        return bool(self.checked)


def crops_of(source: dict) -> np.ndarray | None:
    """The crops (T, 224, 224, 3) of a source (shape_sources): a photo's largest face, or the longest face track
    among a video's first `max_frames` frames; None when no face is found or the file cannot be read."""
    from jobs.eval import landmarker

    try:
        if source["video"]:
            return crop_video(Path(source["path"]), max_frames=int(source["max_frames"])).crops
        return crop_photo(read_image(Path(source["path"])), landmarker()).crops
    except ReconstructError:
        return None


def identity_coefficients(reconstructor, crops: np.ndarray) -> np.ndarray:
    """The model's identity coefficients (T, K) of crops (T, 224, 224, 3): the model call of both modes."""
    images = model_images(np.asarray(crops, np.uint8), reconstructor.image_size)
    return torch.cat([reconstructor.estimate(images[i:i + BATCH]).alpha_identity
                      for i in range(0, len(images), BATCH)]).cpu().numpy()


def neutral_mm(morphable, alphas: np.ndarray) -> np.ndarray:
    """The neutral shape (N, 3) mm of the mean of identity coefficients (T, K); in float64, so that the order the
    Ray path returns a video's frames in does not show."""
    alpha = torch.from_numpy(np.asarray(alphas)).double().mean(0, keepdim=True)
    vertices = morphable.shape(alpha, torch.zeros(1, morphable.n_expression, dtype=torch.float64))
    return vertices[0].numpy() * morphable.unit_scale_mm


def shape_sources(inputs: ShapeInputs) -> list[dict]:
    """Every photo and MICC video of the checked benchmarks, keyed by its path."""
    videos = [{"path": str(video), "video": True, "max_frames": inputs.micc_frames}
              for subject in inputs.checked.get("micc", []) for video in subject.videos.values()]
    photos = [item.image for item in inputs.checked.get("now", [])] + \
        [item["image_path"] for item in inputs.checked.get("realy", [])]
    return videos + [{"path": str(path), "video": False, "max_frames": 0} for path in photos]


def identities_local(reconstructor, sources: list[dict]) -> dict[str, np.ndarray]:
    """path -> the identity coefficients (T, K) of its crops, for the sources where a face was found."""
    found = {}
    for source in sources:
        crops = crops_of(source)
        if crops is not None:
            found[source["path"]] = identity_coefficients(reconstructor, crops)
    return found


def crop_rows(source: dict) -> list[dict]:
    """One row per crop of a source, none when no face was found (the Ray path's flat_map)."""
    crops = crops_of(source)
    return [] if crops is None else [{"path": source["path"], "crop": crop} for crop in crops]


class IdentityEstimator:
    """Identity coefficients of batches of crop rows with one model: the Ray path's map_batches actor."""

    def __init__(self, checkpoint: str):
        self.reconstructor = Reconstructor(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, batch: dict) -> dict:
        return {"path": batch["path"], "alpha_identity": identity_coefficients(self.reconstructor, batch["crop"])}


def identities_ray(checkpoint: str, sources: list[dict], batch_size: int) -> dict[str, np.ndarray]:
    """identities_local as Ray Data batch inference: crops in tasks, the model in actors (GPU when present)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    rows = ray.data.from_items(sources).flat_map(crop_rows).map_batches(
        IdentityEstimator, fn_constructor_kwargs={"checkpoint": checkpoint}, batch_size=batch_size,
        batch_format="numpy", concurrency=max(1, gpus), num_gpus=1 if gpus else 0).take_all()
    found = {}
    for row in rows:
        found.setdefault(row["path"], []).append(row["alpha_identity"])
    return {path: np.stack(alphas) for path, alphas in found.items()}


def run_micc(morphable, subjects, identities: dict) -> tuple[dict, dict]:
    """(summary metrics, per-setting per-subject errors); `identities`: video path -> coefficients (T, K)."""
    triangles = morphable.triangles.cpu().numpy()
    tip_index = int(morphable.landmark_indices[micc.NOSE_TIP])
    per_subject, missed = {setting: {} for setting in micc.SETTINGS}, 0
    for subject in subjects:
        scans = [read_mesh(path) for path in subject.scans]
        for setting, video in subject.videos.items():
            if str(video) not in identities:
                missed += 1
                continue
            vertices = neutral_mm(morphable, identities[str(video)])
            scores = [micc.micc_errors(vertices, triangles, *scan, vertices[tip_index]) for scan in scans]
            per_subject[setting][subject.name] = min(scores, key=lambda errors: errors["mean"])
    return {**micc.micc_summary(per_subject), "micc_missed_videos": missed}, per_subject


def run_micc_rendered(reconstructor, subjects) -> tuple[dict, np.ndarray]:
    """Every subject's first frontal scan rendered over RENDER_VIEWS, each rendering reconstructed like a photo:
    (metrics: NME % over the renderings where a face was found, by |yaw| too, and the count missed; the NMEs)."""
    from jobs.eval import landmarker

    morphable = reconstructor.model.morphable
    triangles = morphable.triangles.cpu().numpy()
    landmark_indices = morphable.landmark_indices.cpu().numpy()
    errors, yaws, missed = [], [], 0
    for subject in subjects:
        scan_vertices, scan_triangles, colours = read_coloured_mesh(subject.scans[0])
        for pitch, yaw in micc_rendered.RENDER_VIEWS:
            image = micc_rendered.render_scan(scan_vertices, scan_triangles, colours, pitch, yaw)
            try:
                vertices = neutral_mm(morphable, identity_coefficients(reconstructor,
                                                                       crop_photo(image, landmarker()).crops))
            except ReconstructError:
                missed += 1
                continue
            errors.append(micc_rendered.rendered_nme(vertices, triangles, landmark_indices, scan_vertices, scan_triangles))
            yaws.append(abs(yaw))
    errors, yaws = np.array(errors), np.array(yaws)
    metrics = {"micc_rendered_images": len(errors), "micc_rendered_missed": missed}
    if len(errors):
        metrics["micc_rendered_nme"] = float(errors.mean())
        for yaw in micc_rendered.RENDER_YAWS:
            if (yaws == yaw).any():
                metrics[f"micc_rendered_nme_yaw_{yaw}"] = float(errors[yaws == yaw].mean())
    return metrics, errors


def run_now(morphable, items, identities: dict, predictions: Path) -> tuple[dict, list]:
    """Exports every image's mesh and 7 landmarks (challenge layout) and scores them: (metrics, distances)."""
    triangles = morphable.triangles.cpu().numpy()
    landmark_vertices = morphable.landmark_indices.cpu().numpy()[list(now.LANDMARKS)]
    distances, metrical, missed = [], [], 0
    for item in items:
        if str(item.image) not in identities:
            missed += 1
            continue
        vertices = neutral_mm(morphable, identities[str(item.image)])
        now.write_prediction(predictions, item.relative, vertices, triangles, vertices[landmark_vertices])
        scan, scan_landmarks = read_mesh(item.scan)[0], now.read_picked_points(item.scan_landmarks)
        distances.append(now.now_distances(vertices, triangles, vertices[landmark_vertices], scan, scan_landmarks))
        metrical.append(now.now_distances(vertices, triangles, vertices[landmark_vertices], scan, scan_landmarks,
                                          metric_unit_mm=1.0))
    metrics = {"now_missed": missed}
    if distances:
        metrics.update(now.now_summary(distances))
        metrics.update(now.now_summary(metrical, prefix="now_metrical"))
    return metrics, distances


def run_realy(morphable, items, identities: dict, folder: Path, template: Path | None) -> dict:
    """REALY submission: one .obj per image (fixed SFM topology, mm), SFM.obj and, with a template, SFM.txt."""
    triangles = morphable.triangles.cpu().numpy()
    missed = 0
    for item in items:
        if item["image_path"] not in identities:
            missed += 1
            continue
        write_obj(folder / f"{Path(item['name']).stem}.obj", neutral_mm(morphable, identities[item["image_path"]]),
                  triangles)
    mean = morphable.mean_shape.double().cpu().numpy() * morphable.unit_scale_mm
    write_obj(folder / "SFM.obj", mean, triangles)
    if template:
        template_vertices, template_triangles = read_mesh(template)
        rows = realy.transfer_keypoints(mean, triangles, morphable.landmark_indices.cpu().numpy(), template_vertices,
                                        template_triangles, realy.read_barycentric(Path(template).with_suffix(".txt")))
        realy.write_barycentric(folder / "SFM.txt", rows)
    return {"realy_exported": len(items) - missed, "realy_missed": missed}


def shape_benchmarks(reconstructor, inputs: ShapeInputs, output: Path, label: str, use_ray: bool = False,
                     batch_size: int = BATCH) -> tuple[dict, dict]:
    """(metrics, curves): curves[name] = per-item errors for the CED plots. With `use_ray` the photos and videos
    are reconstructed by Ray Data batch inference (identities_ray), else in this process."""
    metrics, curves = {}, {}
    name = label.replace("/", "_")[-48:]
    morphable = reconstructor.model.morphable
    sources = shape_sources(inputs)
    if not sources:
        identities = {}
    elif use_ray:
        identities = identities_ray(reconstructor.checkpoint, sources, batch_size)
    else:
        identities = identities_local(reconstructor, sources)
    if "micc" in inputs.checked:
        found, per_subject = run_micc(morphable, inputs.checked["micc"], identities)
        metrics.update(found)
        for setting, key in micc.SETTINGS.items():
            if per_subject[setting]:
                curves[f"micc_{key}"] = np.array([errors["mean"] for errors in per_subject[setting].values()])
    if "micc_rendered" in inputs.checked:
        found, curves["micc_rendered"] = run_micc_rendered(reconstructor, inputs.checked["micc_rendered"])
        metrics.update(found)
    if "now" in inputs.checked:
        found, distances = run_now(morphable, inputs.checked["now"], identities, output / "now_predictions" / name)
        metrics.update(found)
        if distances:
            curves["now"] = np.concatenate(distances)
    if "realy" in inputs.checked:
        metrics.update(run_realy(morphable, inputs.checked["realy"], identities, output / "realy" / name,
                                 inputs.realy_template))
    return metrics, curves


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def shape_tables(results: dict[str, dict]) -> str:
    """Markdown: MICC per setting (mean and RMSE, mean +- std over subjects), NoW beside its anchors, REALY."""
    parts = []
    if any("micc_cooperative_mean_mm" in m or "micc_indoor_mean_mm" in m for m in results.values()):
        lines = ["### MICC Florence (mm; mean +- std over subjects; headline: mean)", "",
                 "| model | " + " | ".join(f"{key} mean | {key} RMSE" for key in micc.SETTINGS.values()) + " |",
                 "|---|" + "---|---|" * len(micc.SETTINGS)]
        for label, m in results.items():
            cells = [f"{m[f'micc_{key}_{score}_mm']:.2f} +- {m[f'micc_{key}_{score}_mm_std']:.2f}"
                     if f"micc_{key}_{score}_mm" in m else "-" for key in micc.SETTINGS.values() for score in micc.SCORES]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines + ["", MICC_NOTE]))
    if any("micc_rendered_images" in m for m in results.values()):
        yaws = micc_rendered.RENDER_YAWS
        lines = ["### MICC Florence, the paper's rendered protocol (NME %; ours: every scan vertex in the 95 mm crop)",
                 "", "| model | NME | " + " | ".join(f"yaw {yaw}" for yaw in yaws) + " | renderings | no face |",
                 "|---|---|" + "---|" * len(yaws) + "---|---|"]
        for label, m in results.items():
            if "micc_rendered_images" in m:
                cells = [m.get("micc_rendered_nme")] + [m.get(f"micc_rendered_nme_yaw_{yaw}") for yaw in yaws]
                lines.append(f"| {label} | " + " | ".join(_cell(c) for c in cells) +
                             f" | {m['micc_rendered_images']} | {m['micc_rendered_missed']} |")
        lines += [f"| {name} | {nme:.2f} |" + " - |" * (len(yaws) + 2) for name, nme in MICC_RENDERED_ANCHORS]
        parts.append("\n".join(lines))
    if any("now_median_mm" in m for m in results.values()):
        lines = ["### NoW (mm: median / mean / std; ours: validation split, anchors: test split)", "",
                 "| model | median | mean | std | metrical median | images | no face |", "|---|---|---|---|---|---|---|"]
        for label, m in results.items():
            lines.append(f"| {label} | " + " | ".join(_cell(m.get(k)) for k in (
                "now_median_mm", "now_mean_mm", "now_std_mm", "now_metrical_median_mm", "now_images", "now_missed")) + " |")
        lines += [f"| {name} | {a:.2f} | {b:.2f} | {c:.2f} | - | - | - |" for name, a, b, c in NOW_ANCHORS]
        parts.append("\n".join(lines))
    if any("realy_exported" in m for m in results.values()):
        parts.append("### REALY\n\nMeshes exported for submission (REALY scores them; anchor: "
                     f"{REALY_ANCHOR}): " + ", ".join(f"{label}: {m['realy_exported']}" for label, m in results.items()
                                                     if "realy_exported" in m))
    return "\n\n".join(parts) + ("\n" if parts else "")


def plot_shape_ced(path: Path, curves: dict[str, np.ndarray], title: str, upper: float, unit: str = "mm") -> None:
    """Error CED of each model (in `unit`); the median in the legend."""
    from jobs.plots import save_ced

    save_ced(path, {label: (errors, float(np.median(errors))) for label, errors in curves.items()}, title,
             f"error ({unit})", "%", upper)