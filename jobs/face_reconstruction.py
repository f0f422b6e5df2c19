"""Reconstruct the face of a photo or video: find and crop it, run a model, write the outputs.

The command is `python -m jobs.reconstruct PATH [--checkpoint CKPT | --run-id RUN] [--output DIR]` (jobs/reconstruct.py).

Face finding and cropping: PATH is a photo or a video in any format `make preprocess` reads (`pipelines.inputs`:
jpg, png, webp, tif, ...; mp4, mov, webm, 3gp, ...; turned and stretched as a player shows them). The face is
found and cropped exactly as the training crops were made: the preprocessing pipeline's default detector and 68
landmarks (`pipelines.landmarks.make_landmarker`, offline), its FFHQ-style alignment to 224 px
(`pipelines.align`; for a video, the longest face track with the pipeline's tracker and temporal smoothing of
the crop), then resized to the checkpoint's `model.image_size`. The face finding uses pipelines/, so it lives in jobs/: the library cest/ imports neither
pipelines/ nor jobs/ (tests/test_import_direction.py).

`reconstruct` writes into its output directory:
  face.obj, face.mtl, face.png, face.glb   the estimated shape, textured with the UV reflectance map
  overlay.png                               input crop | the re-rendered face pasted on it
  preview.png                               the paper's Fig. 4/8 panels: input, overlay, reflectance,
                                            illuminated texture, geometry, illumination, relit x3
  parameters.json                           viewpoint, shape coefficients, SH light, landmarks (source
                                            pixels), the source->crop transform
and for a video also
  parameters.parquet                        one row per reconstructed frame
  overlay.mp4                               input crop | overlay, H.264 (plays in browsers)
with the mesh and preview of the middle frame. A smoothing sigma > 0 smooths the per-frame parameters
(viewpoint, shape, light, reflectance) over time with a Gaussian of SIGMA frames before rendering.
"""

import json
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from cest.checkpoint import load_model
from cest.export import write_textured_mesh
from cest.visualize import face_panels, overlay, panel_grid, to_uint8
from pipelines.inputs import IMAGE_SUFFIXES, VIDEO_SUFFIXES

CROP_SIZE = 224  # the pipeline's crop size; crops are resized from it to the model's image size
PREVIEW_MIN_SIZE = 256  # small models' panels are enlarged to at least this many pixels for viewing


class ReconstructError(ValueError):
    """Input a reconstruction cannot use (unreadable file, unknown format, no face)."""


@dataclass
class FaceCrops:
    crops: np.ndarray  # (T, 224, 224, 3) uint8 RGB, the pipeline's aligned crops
    matrices: np.ndarray  # (T, 2, 3) source pixels -> crop pixels (x right, y down, centres at +0.5)
    frame_indices: np.ndarray  # (T,) index of each crop's frame in the source (0 for a photo)
    fps: float  # frames per second of the source (0 for a photo)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8, as the pipeline reads photos (EXIF orientation applied; HEIC through pi-heif)."""
    from pipelines.decode import read_image as read_rgb

    image = read_rgb(str(path))
    if image is None:
        raise ReconstructError(f"cannot read {path} as an image")
    return image


def fetch_landmark_models() -> None:
    """Fetch the model files of the landmark backend that crop_photo and crop_video use (the pipeline's default)
    before any work starts, so that a missing one is one AssetError naming it and where to get it, raised before
    a model loads or Ray starts instead of in every worker."""
    from pipelines.config import PreprocessConfig
    from pipelines.landmarks import fetch_model_files

    fetch_model_files(PreprocessConfig().detector)


def crop_photo(image: np.ndarray, landmarker=None) -> FaceCrops:
    """The largest face of an RGB photo, cropped by the pipeline's alignment."""
    from pipelines.config import PreprocessConfig
    from pipelines.landmarks import make_landmarker

    landmarker = landmarker or make_landmarker(PreprocessConfig())
    boxes = landmarker.detect(image)
    if len(boxes) == 0:
        raise ReconstructError("no face found in the image")
    landmarks = landmarker.landmarks(image, boxes[:1])
    return crop_with_landmarks(image, landmarks[0])


def crop_with_landmarks(image: np.ndarray, landmarks: np.ndarray) -> FaceCrops:
    """The pipeline's aligned crop of `image` from its 68 landmarks (68, 2) in our pixel convention."""
    from pipelines.align import alignment_frame, crop_matrices, warp

    matrix = crop_matrices(alignment_frame(np.asarray(landmarks, np.float64)[None]), CROP_SIZE)[0]
    return FaceCrops(warp(image, matrix, CROP_SIZE)[None], matrix[None], np.zeros(1, np.int64), 0.0)


def crop_video(path: Path, max_frames: int = 0, landmarker=None) -> FaceCrops:
    """The longest face track of a video, cropped frame by frame as the preprocessing pipeline does."""
    from pipelines.align import alignment_frame, crop_matrices, scale_input, smooth_frames, warp
    from pipelines.config import PreprocessConfig
    from pipelines.decode import Reject, decode_video
    from pipelines.landmarks import make_landmarker
    from pipelines.tracking import FaceTracker

    cfg = PreprocessConfig(max_frames=max_frames, min_segment_frames=1)
    try:
        video = decode_video(str(path), cfg)
    except Reject as reject:
        raise ReconstructError(f"cannot read {path} as a video ({reject.reason}: {reject.detail[:200]})") from None
    tracks, _ = FaceTracker(landmarker or make_landmarker(cfg), cfg).track(video.frames)
    if not tracks:
        raise ReconstructError("no face found in any frame of the video")
    positions, landmarks = max(tracks, key=lambda track: len(track[0]))
    matrices = crop_matrices(smooth_frames(alignment_frame(landmarks), cfg.smooth_sigma), CROP_SIZE)
    crops = np.stack([warp(video.frames[p], m, CROP_SIZE) for p, m in zip(positions, matrices)])
    source_matrices = scale_input(matrices, *video.working_scale)
    return FaceCrops(crops, source_matrices, video.frame_indices[positions].astype(np.int64), float(video.fps))


def model_images(crops: np.ndarray, image_size: int) -> torch.Tensor:
    """(T, 224, 224, 3) uint8 crops -> (T, 3, S, S) float in [0, 1], resized as jobs.frames does for training."""
    if image_size != crops.shape[1]:
        crops = np.stack([cv2.resize(c, (image_size, image_size), interpolation=cv2.INTER_AREA) for c in crops])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255


def to_model_pixels(matrices: np.ndarray, image_size: int) -> np.ndarray:
    """Source -> crop matrices (T, 2, 3) as source -> model-input pixels (a uniform scale of the crop)."""
    return matrices * (image_size / CROP_SIZE)


def invert_affine(matrices: np.ndarray) -> np.ndarray:
    """(T, 2, 3) -> the inverse maps (T, 2, 3)."""
    linear_inverse = np.linalg.inv(matrices[:, :, :2])
    return np.concatenate([linear_inverse, -linear_inverse @ matrices[:, :, 2:]], axis=2)


class Reconstructor:
    """A trained model and what it needs to turn crops into estimates, panels and files."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", morphable=None):
        self.model, self.config, _ = load_model(checkpoint, device, morphable)
        self.device = device
        self.checkpoint = str(checkpoint)

    @property
    def image_size(self) -> int:
        return self.config.model.image_size

    @torch.no_grad()
    def estimate(self, images: torch.Tensor):
        return self.model(images.to(self.device))


def parameters(estimate, landmark_to_source: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame parameters as arrays (T, ...): the model's estimates and the landmarks in source pixels."""
    landmarks = estimate.landmarks[..., :2].cpu().double().numpy()
    source = np.einsum("tij,tnj->tni", landmark_to_source[:, :, :2], landmarks) + landmark_to_source[:, None, :, 2]
    return {
        "viewpoint": estimate.viewpoint.cpu().numpy(),
        "alpha_identity": estimate.alpha_identity.cpu().numpy(),
        "alpha_expression": estimate.alpha_expression.cpu().numpy(),
        "sh": estimate.sh.cpu().numpy(),
        "landmarks_source": source.astype(np.float32),
    }


@torch.no_grad()
def smooth_estimate(model, images: torch.Tensor, estimate, sigma: float):
    """The estimate with viewpoint, shape, light and reflectance smoothed over time (frames along dim 0).

    Re-rasterizes the smoothed shape in the smoothed view; the illuminated texture is unwrapped again."""
    def smooth(tensor):
        array = gaussian_filter1d(tensor.cpu().double().numpy(), sigma, axis=0, mode="nearest")
        return torch.from_numpy(array).to(tensor.dtype).to(tensor.device)

    viewpoint, alpha_identity, alpha_expression, sh, reflectance = (
        smooth(t) for t in (estimate.viewpoint, estimate.alpha_identity, estimate.alpha_expression, estimate.sh,
                            estimate.reflectance))
    vertices = model.morphable.shape(alpha_identity, alpha_expression)
    faces = model.renderer.rasterize(vertices, viewpoint)
    texture, valid = model.renderer.unwrap(images, faces)
    landmarks = faces.pixels[:, model.morphable.landmark_indices, :2]
    return type(estimate)(viewpoint=viewpoint, alpha_identity=alpha_identity, alpha_expression=alpha_expression,
                          vertices=vertices, landmarks=landmarks, faces=faces, texture=texture, texture_valid=valid,
                          reflectance=reflectance, sh=sh)


def enlarged(image: np.ndarray, rows: int = 1) -> np.ndarray:
    """Nearest-neighbour enlargement so that each of `rows` rows of panels is at least PREVIEW_MIN_SIZE tall."""
    factor = max(1, -(-PREVIEW_MIN_SIZE * rows // image.shape[0]))
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST) if factor > 1 else image


def _write_rgb(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def tree_map(function, *trees):
    """`function` applied to the tensors of nested dataclasses (Estimate, RasterizedFaces, Fragments)."""
    first = trees[0]
    if is_dataclass(first):
        return type(first)(**{f.name: tree_map(function, *(getattr(t, f.name) for t in trees)) for f in fields(first)})
    return function(*trees)


def frames_of(estimate, start: int, stop: int):
    return tree_map(lambda tensor: tensor[start:stop], estimate)


def write_mesh_and_preview(reconstructor: Reconstructor, images: torch.Tensor, estimate, index: int,
                           output: Path) -> None:
    """face.{obj,mtl,png,glb}, overlay.png and preview.png of frame `index`."""
    model = reconstructor.model
    frame = frames_of(estimate, index, index + 1)
    write_textured_mesh(output, "face", frame.vertices[0].cpu().numpy(), model.morphable.triangles.cpu().numpy(),
                        model.morphable.uv.cpu().numpy(), to_uint8(frame.reflectance)[0])
    crop = images[index:index + 1].to(reconstructor.device)
    _write_rgb(output / "overlay.png", enlarged(np.concatenate(
        [to_uint8(crop)[0], to_uint8(overlay(model, crop, frame))[0]], axis=1)))
    _write_rgb(output / "preview.png", enlarged(panel_grid(face_panels(model, crop, frame))))


def write_parameters_json(path: Path, params: dict, index: int, extra: dict) -> None:
    values = {name: array[index].tolist() for name, array in params.items()}
    path.write_text(json.dumps(dict(extra, **values), indent=1))


def write_parameters_parquet(path: Path, params: dict, crops: FaceCrops, matrices: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "frame_index": crops.frame_indices,
        "time_s": crops.frame_indices / crops.fps if crops.fps > 0 else np.zeros(len(crops.frame_indices)),
        "source_to_model_input": [m.reshape(-1).tolist() for m in matrices],
    }
    columns.update({name: [row.reshape(-1).tolist() for row in array] for name, array in params.items()})
    pq.write_table(pa.table(columns), path)


def write_overlay_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """(T, H, W, 3) uint8 RGB -> H.264 / yuv420p mp4 (what browsers play), even frame sizes."""
    import av

    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps or 25)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            packet_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
            container.mux(stream.encode(packet_frame))
        container.mux(stream.encode())


def reconstruct(path: Path, reconstructor: Reconstructor, output: Path, smooth_sigma: float = 0.0,
                max_frames: int = 0, batch_size: int = 16) -> dict:
    """Reconstruct the face in a photo or video and write every output; returns a summary."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ReconstructError(f"no file at {path}")
    if suffix in IMAGE_SUFFIXES:
        crops = crop_photo(read_image(path))
    elif suffix in VIDEO_SUFFIXES:
        crops = crop_video(path, max_frames)
    else:
        raise ReconstructError(f"{path.suffix or path.name}: not a photo ({', '.join(IMAGE_SUFFIXES)}) or a video "
                               f"({', '.join(VIDEO_SUFFIXES)})")
    size = reconstructor.image_size
    images = model_images(crops.crops, size)
    estimates = [reconstructor.estimate(images[start:start + batch_size])
                 for start in range(0, len(images), batch_size)]
    estimate = tree_map(lambda *tensors: torch.cat(tensors), *estimates)
    if smooth_sigma > 0 and len(images) > 1:
        estimate = smooth_estimate(reconstructor.model, images.to(reconstructor.device), estimate, smooth_sigma)
    to_model = to_model_pixels(crops.matrices, size)
    params = parameters(estimate, invert_affine(to_model))
    output.mkdir(parents=True, exist_ok=True)
    middle = len(images) // 2
    write_mesh_and_preview(reconstructor, images, estimate, middle, output)
    extra = {"source": str(path), "checkpoint": reconstructor.checkpoint, "image_size": size,
             "frame_index": int(crops.frame_indices[middle]),
             "source_to_model_input": to_model[middle].tolist()}
    write_parameters_json(output / "parameters.json", params, middle, extra)
    if suffix in VIDEO_SUFFIXES:
        write_parameters_parquet(output / "parameters.parquet", params, crops, to_model)
        model = reconstructor.model
        overlays = torch.cat([overlay(model, images[s:s + batch_size].to(reconstructor.device),
                                      frames_of(estimate, s, s + batch_size)) for s in range(0, len(images), batch_size)])
        strips = np.concatenate([to_uint8(images), to_uint8(overlays)], axis=2)
        write_overlay_video(output / "overlay.mp4", np.stack([enlarged(s) for s in strips]), crops.fps)
    return {"frames": len(images), "output": str(output)}
