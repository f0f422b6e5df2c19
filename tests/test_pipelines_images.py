"""Images as input: each image is a one-frame clip in the clip schema (the paper's single-image setting)."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import pytest

from pipelines.config import PreprocessConfig
from sample_assets import asset
from pipelines.inputs import discover_inputs
from pipelines.landmarks import DlibLandmarker
from pipelines.masks import SkinRegionMasker
from pipelines.schema import CLIP_SCHEMA, decode_clip_row, validate_table
from pipelines.stages import process_input, rows_table

IMAGES = ("eos_image_0010.png", "image00050.jpg")  # the second from the AFLW2000 sample


def read_pts(path: Path) -> np.ndarray:
    text = path.read_text()
    rows = text[text.index("{") + 1 : text.index("}")].split("\n")
    return np.array([row.split() for row in rows if row.strip()], float)


@pytest.fixture(scope="module")
def image_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(asset(f"landmarks68/{IMAGES[0]}"), folder / IMAGES[0])
    shutil.copy(asset(f"aflw2000_sample/{IMAGES[1]}"), folder / IMAGES[1])
    gray = cv2.cvtColor(cv2.imread(str(asset(f"landmarks68/{IMAGES[0]}"))), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "gray.png"), gray)
    landmarker, masker = DlibLandmarker(), SkinRegionMasker()
    return {
        Path(item.path).name: process_input(item, PreprocessConfig(), landmarker, masker)
        for item in discover_inputs(str(folder))
    }


def test_each_image_is_a_one_frame_clip_with_its_landmarks(image_rows):
    for name in IMAGES:
        (row,) = image_rows[name]
        assert row["row_kind"] == "clip" and row["num_frames"] == 1 and row["frame_indices"] == [0]
        assert row["clip_id"] == name and row["segment_key"].endswith(f"/{name}/000")
        clip = decode_clip_row(row)
        assert clip["frames"].shape == (1, 224, 224, 3) and clip["masks"][0].mean() > 0.15
    # The crop landmarks mapped back to the image agree with the iBUG annotation.
    clip = decode_clip_row(image_rows[IMAGES[0]][0])
    inverse = np.linalg.inv(np.vstack([clip["crop_transforms"][0], [0, 0, 1]]))[:2]
    points = clip["landmarks"][0] @ inverse[:, :2].T + inverse[:, 2]
    truth = read_pts((asset(f"landmarks68/{IMAGES[0]}")).with_suffix(".pts"))
    error = np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45])
    assert error < 0.06, error  # measured 0.025 (dlib, test_pipelines_tracking)


def test_image_rows_pass_the_clip_table_checks(image_rows):
    table = rows_table([row for name in IMAGES for row in image_rows[name]])
    validate_table(table.filter(pc.equal(table.column("row_kind"), "clip")).select(CLIP_SCHEMA.names).cast(CLIP_SCHEMA))


def test_a_grayscale_image_is_rejected(image_rows):
    (row,) = image_rows["gray.png"]
    assert (row["row_kind"], row["reason"]) == ("reject", "grayscale")
