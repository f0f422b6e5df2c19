"""MICC Florence shape error in millimetres (Bagdanov et al. 2011), the protocol of Genova et al. 2018, GANFit
(Gecer et al. 2019) and Deep3DFaceRecon (Deng et al. 2019).

Data (the user's copy, `--micc DIR`): DIR/subject_NN/Video/{Indoor-Cooperative,PTZ-Indoor,PTZ-Outdoor}.<video>
and the 3dMD scans DIR/subject_NN/Model/frontal1/obj/*.obj (and frontal2 where present), in millimetres.
Per subject and setting one shape, estimated from that setting's video (jobs.eval: the identity coefficients
averaged over the face track's frames, zero expression).

Score of one shape against one scan (`micc_errors`):
  crop      the scan's vertices within CROP_RADIUS_MM (95 mm) of its nose tip, and the triangles among them;
            the nose tip is the scan vertex nearest the viewer (largest z): MICC's scans are stored frontal
            with z toward the viewer (an assumption a user checks on their copy: docs/eval.md);
  align     the prediction (mm, model frame: x left of the subject, y up, z toward the viewer) translated so
            its nose-tip landmark is on the scan's, then ICP with isotropic scale
            (`cest.eval.surface.align_to_surface`) onto the cropped scan's vertices;
  distance  symmetric point-to-surface: every cropped scan vertex to the aligned prediction's surface, and
            every aligned prediction vertex inside the same sphere to the cropped scan's surface;
  score     "mean": the mean of the two directions' mean distances (GANFit); "rmse": the square root of the
            mean of the two directions' mean squared distances (Deep3DFaceRecon's per-mesh RMSE).
Per subject the best (lowest) score over its frontal scans (GANFit's benchmark takes the minimum over
frontal1 and frontal2); per setting the mean and standard deviation over the subjects, never pooled across
settings. Headline: "mean" (GANFit's reported form); "rmse" is reported beside it.

Shapes: vertices (N, 3) / (M, 3) float64 mm, triangles (F, 3) int64.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cest.eval.files import DatasetError, require_dir
from cest.eval.surface import align_to_surface, apply, closest_points, crop_sphere

SETTINGS = {"Indoor-Cooperative": "cooperative", "PTZ-Indoor": "indoor", "PTZ-Outdoor": "outdoor"}
CROP_RADIUS_MM = 95.0
VIDEO_SUFFIXES = (".mjpg", ".mjpeg", ".mpg", ".mpeg", ".avi", ".mp4", ".mkv")
NOSE_TIP = 30  # iBUG 68, 0-based: the tip of the nose
SCORES = ("mean", "rmse")


@dataclass
class MICCSubject:
    name: str  # subject_NN
    videos: dict[str, Path]  # setting (SETTINGS' keys) -> video file
    scans: list[Path]  # frontal scans (.obj)


def micc_subjects(folder: Path, videos: bool = True) -> list[MICCSubject]:
    """Every subject_NN of a MICC Florence folder with its frontal scans and (`videos`) its three videos;
    DatasetError naming the first missing file otherwise. The rendered protocol (cest.eval.micc_rendered) needs
    the scans only."""
    folder = require_dir(folder, "MICC Florence")
    subjects = []
    for directory in sorted(p for p in folder.glob("subject_*") if p.is_dir()):
        scans = sorted(directory.glob("Model/frontal*/obj/*.obj"))
        if not scans:
            raise DatasetError(f"MICC Florence: no scan {directory}/Model/frontal1/obj/*.obj")
        found_videos = {}
        for setting in SETTINGS if videos else ():
            found = [p for p in sorted((directory / "Video").glob(f"{setting}.*")) if p.suffix.lower() in VIDEO_SUFFIXES]
            if not found:
                raise DatasetError(f"MICC Florence: no video {directory}/Video/{setting}.mjpg")
            found_videos[setting] = found[0]
        subjects.append(MICCSubject(directory.name, found_videos, scans))
    if not subjects:
        raise DatasetError(f"MICC Florence: no subject_NN folders in {folder}")
    return subjects


def nose_tip(scan_vertices: np.ndarray) -> np.ndarray:
    """The scan vertex nearest the viewer (largest z) of a frontal scan: (3,)."""
    return np.asarray(scan_vertices, np.float64)[np.argmax(scan_vertices[:, 2])]


def aligned_to_scan(vertices: np.ndarray, triangles: np.ndarray, scan_vertices: np.ndarray, scan_triangles: np.ndarray,
                    prediction_nose_tip: np.ndarray, scan_nose_tip: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the prediction aligned to the cropped scan, the cropped scan's vertices and triangles): the crop and
    alignment steps of the module docstring."""
    tip = nose_tip(scan_vertices) if scan_nose_tip is None else np.asarray(scan_nose_tip, np.float64)
    crop_vertices, crop_triangles = crop_sphere(scan_vertices, scan_triangles, tip, CROP_RADIUS_MM)
    if len(crop_triangles) == 0:
        raise ValueError(f"no scan triangles within {CROP_RADIUS_MM} mm of the nose tip {tip}")
    start = np.asarray(vertices, np.float64) - prediction_nose_tip + tip
    return apply(align_to_surface(start, triangles, crop_vertices), start), crop_vertices, crop_triangles


def micc_errors(vertices: np.ndarray, triangles: np.ndarray, scan_vertices: np.ndarray, scan_triangles: np.ndarray,
                prediction_nose_tip: np.ndarray, scan_nose_tip: np.ndarray | None = None) -> dict[str, float]:
    """{"mean": mm, "rmse": mm} of one predicted shape against one scan (module docstring)."""
    tip = nose_tip(scan_vertices) if scan_nose_tip is None else np.asarray(scan_nose_tip, np.float64)
    aligned, crop_vertices, crop_triangles = aligned_to_scan(vertices, triangles, scan_vertices, scan_triangles,
                                                             prediction_nose_tip, tip)
    scan_to_prediction = closest_points(crop_vertices, aligned, triangles)[0]
    inside = np.linalg.norm(aligned - tip, axis=1) <= CROP_RADIUS_MM
    prediction_to_scan = closest_points(aligned[inside], crop_vertices, crop_triangles)[0]
    return {"mean": float((scan_to_prediction.mean() + prediction_to_scan.mean()) / 2),
            "rmse": float(np.sqrt(((scan_to_prediction ** 2).mean() + (prediction_to_scan ** 2).mean()) / 2))}


def micc_summary(per_subject: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """per_subject[setting][subject] = {"mean", "rmse"} -> micc_<setting>_<score>_mm (mean over subjects), _std
    and the subject count per setting."""
    summary = {}
    for setting, key in SETTINGS.items():
        subjects = per_subject.get(setting, {})
        if not subjects:
            continue
        summary[f"micc_{key}_subjects"] = len(subjects)
        for score in SCORES:
            values = np.array([errors[score] for errors in subjects.values()])
            summary[f"micc_{key}_{score}_mm"] = float(values.mean())
            summary[f"micc_{key}_{score}_mm_std"] = float(values.std())
    return summary
