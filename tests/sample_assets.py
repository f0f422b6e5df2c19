"""Third-party files for the tests, always through the asset registry (`cest.assets`, honouring CEST_ASSETS_MIRROR).

A test that needs an asset is skipped only when no mirror is configured and upstream cannot be reached
(`AssetUnavailable`); a configured mirror that lacks a file, or a file with the wrong hash, fails the test.
"""

from pathlib import Path

import pytest

from cest import assets


def asset(name: str) -> Path:
    """Local path of the registered asset `name`."""
    try:
        return assets.fetch(name)
    except assets.AssetUnavailable as error:
        pytest.skip(str(error))


def asset_dir(prefix: str) -> Path:
    """Local path of the registered directory `prefix`, every file in it fetched."""
    try:
        return assets.fetch_dir(prefix)
    except assets.AssetUnavailable as error:
        pytest.skip(str(error))


def sample_clip(speaker_video: str) -> Path:
    """The clip of the VoxCeleb-layout sample, e.g. sample_clip("id10019/lpd0")."""
    return asset(f"voxceleb_sample/{speaker_video}/00001.mp4")


def sample_clip_names() -> list[str]:
    """The registered sample clips as "speaker/video", sorted (no file is fetched)."""
    return [str(Path(name).parent.relative_to("voxceleb_sample")) for name in assets.names_under("voxceleb_sample")]
