"""Render a real face through the whole renderer: `python -m jobs.render_photo --output demo/face.png`.

Takes a photo with 68 annotated landmarks (a sample photo of the asset registry, or any photo with an iBUG .pts
file of the same name beside it), fits a weak perspective viewpoint of the Surrey Face Model's
mean shape to them, unwraps the photo into a UV illuminated texture, and renders that texture back in the
photo's view (overlay), from other yaws, and under a directional spherical-harmonics light.
"""

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from cest.assets import AssetError, fetch, names_under
from cest.fitting import fit_viewpoint
from cest.render.lighting import ambient_sh, directional_sh
from cest.morphable import load_sfm
from cest.render.renderer import Renderer

# Inner 51 iBUG points (brows, nose, eyes, mouth): the jaw line is a silhouette that moves with pose.
INNER_LANDMARKS = slice(17, 68)
# The registered photos with 68 annotated landmarks (`--image NAME`).
SAMPLE_PHOTOS = tuple(Path(name).name for name in names_under("landmarks68") if not name.endswith(".pts"))


class DemoError(ValueError):
    """A user error the demo reports in one line (a photo or landmark file it cannot use)."""


def read_pts(path: Path) -> np.ndarray:
    """An iBUG .pts file -> (68, 2) float32, converted from its 1-based pixel convention to ours."""
    try:
        lines = path.read_text().split("{")[1].split("}")[0].split()
        points = np.asarray(lines, dtype=np.float32).reshape(-1, 2)
    except (IndexError, ValueError, UnicodeDecodeError):
        points = None
    if points is None or points.shape != (68, 2):
        raise DemoError(f"{path} is not an iBUG .pts file with 68 points")
    return points - 0.5


def photo_files(image: str) -> tuple[Path, Path]:
    """The photo and its landmarks: a file path with NAME.pts beside it, or the name of a sample photo."""
    path = Path(image)
    if path.is_file():
        landmarks = path.with_suffix(".pts")
        if not landmarks.is_file():
            raise DemoError(f"{path} has no landmark file {landmarks} beside it (68 points, iBUG .pts format)")
        return path, landmarks
    if image in SAMPLE_PHOTOS:
        return fetch(f"landmarks68/{image}"), fetch(f"landmarks68/{path.stem}.pts")
    raise DemoError(
        f"photo {image!r} not found: give a file path (with its .pts landmarks beside it) "
        f"or a sample photo: {', '.join(SAMPLE_PHOTOS)}"
    )


def read_photo(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise DemoError(f"cannot read {path} as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def square_crop(image: np.ndarray, landmarks: np.ndarray, size: int, margin: float = 1.6):
    """Square crop centred on the landmarks, resized to size x size; landmarks mapped along."""
    centre = (landmarks.min(0) + landmarks.max(0)) / 2
    half = margin * (landmarks.max(0) - landmarks.min(0)).max() / 2
    scale = size / (2 * half)
    affine = np.array([[scale, 0, size / 2 - scale * centre[0]], [0, scale, size / 2 - scale * centre[1]]])
    # OpenCV samples at integer pixel centres; ours are at +0.5, which shifts the offset by 0.5 (scale - 1).
    cv_affine = affine.copy()
    cv_affine[:, 2] += 0.5 * (scale - 1)
    crop = cv2.warpAffine(image, cv_affine, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return crop, landmarks * scale + affine[:, 2]


def complete_texture(texture: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill texels the photo does not show: from the mirror texel where that one is seen, else by inpainting."""
    mirrored = torch.where(valid > 0, texture, texture.flip(-1))
    seen = torch.maximum(valid, valid.flip(-1))
    pixels = to_uint8(mirrored)
    holes = (seen[0, 0] == 0).numpy().astype(np.uint8)
    filled = cv2.inpaint(pixels, holes, 5, cv2.INPAINT_TELEA)
    return torch.from_numpy(filled).permute(2, 0, 1)[None].float() / 255


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def render_demo(image_name: str, size: int, uv_size: int) -> np.ndarray:
    photo_path, landmarks_path = photo_files(image_name)
    image = read_photo(photo_path)
    landmarks = read_pts(landmarks_path)
    crop, crop_landmarks = square_crop(image, landmarks, size)

    model = load_sfm()
    renderer = Renderer.for_model(model, size, uv_size)
    vertices = model.mean_shape[None]
    model_points = model.landmarks(vertices)[0].numpy()
    viewpoint = torch.from_numpy(fit_viewpoint(crop_landmarks[INNER_LANDMARKS], model_points[INNER_LANDMARKS], size))
    photo = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255

    faces = renderer.rasterize(vertices, viewpoint[None])
    texture, valid = renderer.unwrap(photo, faces)
    texture = complete_texture(texture, valid)
    overlay = photo * (1 - faces.face_mask) + renderer.shade(faces, texture, ambient_sh(1))

    panels = [photo, overlay]
    for yaw in (-40, 0, 40):
        turned = viewpoint.clone()
        turned[1:4] = torch.tensor([0.0, math.radians(yaw), 0.0])
        lit = renderer.render(vertices, turned[None], texture, directional_sh((0.6, 0.3, 0.74)))[0]
        panels.append(lit)
    uv_panel = torch.nn.functional.interpolate(texture, size=(size, size), mode="bilinear", align_corners=False)
    panels.append(uv_panel)
    return np.concatenate([to_uint8(p) for p in panels], axis=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("demo/face.png"))
    parser.add_argument(
        "--image",
        default="eos_image_0010.png",
        help=f"a photo with NAME.pts (68 iBUG points) beside it, or a sample photo: {', '.join(SAMPLE_PHOTOS)}",
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--uv-size", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        strip = render_demo(args.image, args.size, args.uv_size)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(args.output), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)):
            raise DemoError(f"cannot write {args.output} (an image file name such as demo/face.png)")
    except (AssetError, DemoError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: photo | overlay | yaw -40, 0, 40 under a directional light | UV texture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
