"""NoW benchmark (Sanyal et al., RingNet, CVPR 2019): challenge export and local scoring of the validation split,
following the public evaluation code (github.com/soubhiksanyal/now_evaluation, read, not copied).

Data (the user's copy, `--now DIR`, the layout now_evaluation reads):
  DIR/imagepathsvalidation.txt                         lines SUBJECT/CHALLENGE/IMAGE.jpg
  DIR/NoW_Dataset/final_release_version/iphone_pictures/SUBJECT/CHALLENGE/IMAGE.jpg
  DIR/scans/SUBJECT/*.obj                              the neutral scan (mm)
  DIR/scans_lmks_onlypp/SUBJECT/*.pp                   its 7 landmarks (MeshLab picked points)

Export (`write_prediction`), the layout the NoW challenge accepts: PREDICTIONS/SUBJECT/CHALLENGE/IMAGE.obj (the
mesh, here in mm) and IMAGE.npy (7, 3): the 7 landmarks in the mesh's coordinates, in the order of the NoW
scan annotations: the subject's right eye outer and inner corners, left eye inner and outer corners, nose
bottom, right and left mouth corners (`LANDMARKS`: iBUG 0-based 36, 39, 42, 45, 33, 48, 54).

Score of one prediction (`now_distances`), as now_evaluation computes it:
  crop      the scan's vertices within 1.4 x (outer-eye distance + nose length) / 2 of the point 30 % of the way
            from the nose bottom to the midpoint of the inner eye corners (`face_crop`);
  align     Procrustes with scale of the 7 predicted landmarks onto the scan's 7, then the rigid + scale
            refinement that minimises the sum of squared distances from the cropped scan's vertices to the
            predicted surface (`cest.eval.surface.align_to_surface`; now_evaluation minimises the same sum
            with chumpy's dogleg). Differences: no reflection is allowed (now_evaluation's Procrustes may pick
            one; for 7 non-coplanar face landmarks the best fit is a rotation);
  distance  each cropped scan vertex to the closest point of the aligned mesh, in mm.
Summary (`now_summary`): median, mean and standard deviation of all distances of all images together.
Metrical variant (`metric_unit_mm` given, now_evaluation's scan2mesh_computations_metrical): the prediction is
multiplied by its unit (mm) and aligned by rotation and translation only.

Shapes: vertices (N, 3), triangles (F, 3), landmarks (7, 3), distances (K,) float64 mm.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cest.eval.files import DatasetError, require_dir, write_obj
from cest.eval.surface import align_to_surface, apply, closest_points, similarity_transform

LANDMARKS = (36, 39, 42, 45, 33, 48, 54)  # iBUG 68, 0-based, in the NoW annotation order
IMAGE_LIST = "imagepathsvalidation.txt"
IMAGES = "NoW_Dataset/final_release_version/iphone_pictures"
SCANS, SCAN_LANDMARKS = "scans", "scans_lmks_onlypp"
CROP_SCALE, CROP_CENTRE = 1.4, 0.3


@dataclass
class NoWItem:
    relative: str  # SUBJECT/CHALLENGE/IMAGE.jpg, as in the image list
    image: Path
    scan: Path
    scan_landmarks: Path

    @property
    def challenge(self) -> str:
        return self.relative.split("/")[-2]


def now_items(folder: Path) -> list[NoWItem]:
    """The validation images with their subject's scan and landmarks; DatasetError naming the first missing file."""
    folder = require_dir(folder, "NoW")
    image_list = folder / IMAGE_LIST
    if not image_list.is_file():
        raise DatasetError(f"NoW: missing {image_list}")
    items = []
    for line in image_list.read_text().split():
        subject = line.split("/")[-3] if line.count("/") >= 2 else None
        if subject is None:
            raise DatasetError(f"NoW: {image_list}: line {line!r} is not SUBJECT/CHALLENGE/IMAGE")
        image = folder / IMAGES / line
        scans = sorted((folder / SCANS / subject).glob("*.obj"))
        landmarks = sorted((folder / SCAN_LANDMARKS / subject).glob("*.pp"))
        for found, expected in ((image.is_file(), image), (scans, folder / SCANS / subject / "*.obj"),
                                (landmarks, folder / SCAN_LANDMARKS / subject / "*.pp")):
            if not found:
                raise DatasetError(f"NoW: missing {expected}")
        items.append(NoWItem(line, image, scans[0], landmarks[0]))
    if not items:
        raise DatasetError(f"NoW: {image_list} lists no images")
    return items


def read_picked_points(path: Path) -> np.ndarray:
    """The 7 landmarks (7, 3) of a MeshLab .pp file (<point x=".." y=".." z=".." .../> in file order)."""
    points = [[float(re.search(rf'\b{axis}="([^"]+)"', tag).group(1)) for axis in "xyz"]
              for tag in re.findall(r"<point\b[^>]*>", Path(path).read_text())]
    if len(points) != 7:
        raise DatasetError(f"NoW: {path} holds {len(points)} picked points, expected 7")
    return np.asarray(points, np.float64)


def face_crop(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius of now_evaluation's face sphere from a scan's 7 landmarks."""
    nose_bottom, nose_bridge = landmarks[4], (landmarks[1] + landmarks[2]) / 2
    centre = nose_bottom + CROP_CENTRE * (nose_bridge - nose_bottom)
    radius = CROP_SCALE * (np.linalg.norm(landmarks[0] - landmarks[3]) + np.linalg.norm(nose_bridge - nose_bottom)) / 2
    return centre, float(radius)


def now_distances(vertices: np.ndarray, triangles: np.ndarray, landmarks: np.ndarray, scan_vertices: np.ndarray,
                  scan_landmarks: np.ndarray, metric_unit_mm: float | None = None) -> np.ndarray:
    """Distances (K,) mm from the cropped scan's vertices to the aligned prediction (module docstring)."""
    centre, radius = face_crop(scan_landmarks)
    scan_points = scan_vertices[np.linalg.norm(scan_vertices - centre, axis=1) <= radius]
    unit = 1.0 if metric_unit_mm is None else metric_unit_mm
    vertices, landmarks = np.asarray(vertices, np.float64) * unit, np.asarray(landmarks, np.float64) * unit
    start = apply(similarity_transform(landmarks, scan_landmarks, scale=metric_unit_mm is None), vertices)
    aligned = apply(align_to_surface(start, triangles, scan_points, scale=metric_unit_mm is None), start)
    return closest_points(scan_points, aligned, triangles)[0]


def now_summary(distances: list[np.ndarray], prefix: str = "now") -> dict[str, float]:
    """Median, mean and std (mm) of every distance of every image, as now_evaluation's cumulative_errors."""
    pooled = np.concatenate(distances)
    return {f"{prefix}_median_mm": float(np.median(pooled)), f"{prefix}_mean_mm": float(pooled.mean()),
            f"{prefix}_std_mm": float(pooled.std()), f"{prefix}_images": len(distances)}


def write_prediction(predictions: Path, relative: str, vertices: np.ndarray, triangles: np.ndarray,
                     landmarks: np.ndarray) -> Path:
    """PREDICTIONS/SUBJECT/CHALLENGE/IMAGE.obj and IMAGE.npy (7, 3), as the NoW challenge takes them."""
    stem = Path(predictions) / Path(relative).with_suffix("")
    obj = write_obj(stem.with_suffix(".obj"), vertices, triangles)
    np.save(stem.with_suffix(".npy"), np.asarray(landmarks, np.float64))
    return obj
