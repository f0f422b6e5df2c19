"""MICC Florence, the CEST paper's rendered protocol (Sec. 4.4, after VRN: Jackson et al. 2017): each subject's
3D scan rendered over a grid of poses, a shape reconstructed from every rendering, and the NME between the
reconstruction and the scan.

Protocol (`RENDER_VIEWS`, `render_scan`, `rendered_nme`):
  views     pitch -15, 20 or 25 degrees x yaw -80, -40, 0, 40 or 80 degrees: the grid the paper states (15
            views; its text also says "20 poses" and 2,550 images for 53 subjects, which that grid does not
            give, so the stated angles are taken as the definition);
  render    the scan cropped to the 95 mm sphere around its nose tip (as the mm protocol, cest.eval.micc),
            turned about the sphere's centre, orthographic, the 95 mm radius at RENDER_FILL of the half-width
            of a RENDER_SIZE image, its colours (texture or vertex colours) under an ambient plus frontal
            Lambertian light, on a grey background; the face is then found and cropped as in any photo;
  score     the neutral reconstruction (identity coefficients, zero expression) aligned to the cropped scan as
            in the mm protocol (nose tip onto nose tip, then ICP with isotropic scale); the mean distance
            from every cropped scan vertex to the aligned surface, over the outer interocular distance
            (landmarks 36-45, 0-based iBUG) of the aligned reconstruction, in percent.
What differs from the paper: its NME runs over 19,618 scan vertices chosen by VRN (a set never published);
here every scan vertex within the 95 mm crop counts. The scan carries no landmarks, so the interocular
distance is the aligned reconstruction's, in the scan's units after the similarity.

Shapes: vertices (N, 3) float64 mm in the scan's frame (x toward the subject's left, y up, z toward the
viewer: MICC's frontal scans), triangles (F, 3) int64, colours (N, 3) float in [0, 1]; images (H, W, 3) uint8.
"""

import math

import numpy as np
import torch

from cest.eval.micc import CROP_RADIUS_MM, NOSE_TIP, aligned_to_scan, nose_tip
from cest.eval.surface import closest_points
from cest.render.camera import project, rotation_matrix
from cest.render.geometry import vertex_normals
from cest.render.raster import interpolate, rasterize

RENDER_VIEWS = tuple((pitch, yaw) for pitch in (-15, 20, 25) for yaw in (-80, -40, 0, 40, 80))
RENDER_YAWS = (0, 40, 80)  # the views' |yaw|, by which scores are also reported
RENDER_SIZE = 320  # px: the face about 200 px wide, above what the face detectors need
RENDER_FILL = 0.8  # the crop sphere's radius as a fraction of the image's half-width
AMBIENT = 0.55  # light: AMBIENT + (1 - AMBIENT) * max(0, n . view direction)
BACKGROUND = 0.5
SKIN = (0.72, 0.56, 0.47)  # colour of a scan without texture or vertex colours
OUTER_EYE_CORNERS = (36, 45)


def view_rotation(pitch: float, yaw: float) -> torch.Tensor:
    """Rotation vector (3,) of R = Rx(pitch) Ry(yaw), degrees: positive yaw turns the face toward the image's
    right, positive pitch tilts it down (more forehead, less chin in view)."""
    from cest.synthetic import euler_to_rotvec

    angles = torch.tensor([[yaw, pitch, 0.0]], dtype=torch.float64) * math.pi / 180
    return euler_to_rotvec(*angles.unbind(-1))[0]


def render_scan(vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray | None, pitch: float, yaw: float,
                scan_nose_tip: np.ndarray | None = None, image_size: int = RENDER_SIZE) -> np.ndarray:
    """The scan's 95 mm crop seen from (pitch, yaw), turned about the crop's centroid: (H, W, 3) uint8."""
    vertices = np.asarray(vertices, np.float64)
    tip = nose_tip(vertices) if scan_nose_tip is None else np.asarray(scan_nose_tip, np.float64)
    inside = np.linalg.norm(vertices - tip, axis=1) <= CROP_RADIUS_MM
    triangles = np.asarray(triangles, np.int64)
    faces = torch.from_numpy(triangles[inside[triangles].all(1)])
    points = torch.from_numpy(vertices - vertices[inside].mean(0))[None]
    scale = RENDER_FILL / CROP_RADIUS_MM
    viewpoint = torch.cat([torch.tensor([scale], dtype=torch.float64), view_rotation(pitch, yaw),
                           torch.zeros(3, dtype=torch.float64)])[None]
    pixels = project(points, viewpoint, image_size)
    fragments = rasterize(pixels, faces, (image_size, image_size), backend="torch")
    normals = vertex_normals(points, faces) @ rotation_matrix(viewpoint[:, 1:4]).transpose(-1, -2)
    albedo = torch.as_tensor(SKIN if colours is None else colours, dtype=torch.float64).expand(points.shape[1], 3)
    values = interpolate(torch.cat([albedo[None], normals], -1), fragments, faces)[0]
    facing = torch.nn.functional.normalize(values[..., 3:], dim=-1, eps=1e-12)[..., 2].clamp(min=0)
    shaded = values[..., :3] * (AMBIENT + (1 - AMBIENT) * facing[..., None])
    covered = (fragments.triangle_id[0] >= 0)[..., None]
    image = torch.where(covered, shaded, torch.full_like(shaded, BACKGROUND))
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def rendered_nme(vertices: np.ndarray, triangles: np.ndarray, landmark_indices: np.ndarray, scan_vertices: np.ndarray,
                 scan_triangles: np.ndarray, scan_nose_tip: np.ndarray | None = None) -> float:
    """NME (%) of one reconstruction (mm, with its 68 landmark vertex indices) against one scan."""
    landmark_indices = np.asarray(landmark_indices)
    aligned, crop_vertices, _ = aligned_to_scan(vertices, triangles, scan_vertices, scan_triangles,
                                                vertices[landmark_indices[NOSE_TIP]], scan_nose_tip)
    distances = closest_points(crop_vertices, aligned, triangles)[0]
    right, left = aligned[landmark_indices[list(OUTER_EYE_CORNERS)]]
    return float(100 * distances.mean() / np.linalg.norm(right - left))

