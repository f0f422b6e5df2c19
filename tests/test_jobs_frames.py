import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.frames import evenly_spaced, frames_from_rows, read_clip_rows
from pipelines.config import PreprocessConfig
from pipelines.inputs import make_input
from pipelines.landmarks import make_landmarker
from pipelines.masks import make_masker
from pipelines.schema import CLIP_SCHEMA
from pipelines.stages import process_input
from sample_assets import sample_clip


@pytest.fixture(scope="module")
def preprocess_output(tmp_path_factory):
    """A preprocess output directory holding two real clips' rows, written as the pipeline's sink does."""
    cfg = PreprocessConfig(frame_stride=4, max_frames=12, min_segment_frames=4)
    landmarker, masker = make_landmarker(cfg), make_masker(cfg.mask_backend, cfg.skin_threshold)
    rows = []
    for clip in ("id10001/pcavs00015", "id10019/lpd0"):
        rows += process_input(make_input(str(sample_clip(clip))), cfg, landmarker, masker)
    clips = [{name: row[name] for name in CLIP_SCHEMA.names} for row in rows if row["row_kind"] == "clip"]
    root = tmp_path_factory.mktemp("preprocessed")
    (root / "clips").mkdir()
    pq.write_table(pa.Table.from_pylist(clips, schema=CLIP_SCHEMA), root / "clips" / "part-0.parquet")
    return root


def test_evenly_spaced_keeps_ends_and_all_of_short_clips():
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9]
    assert evenly_spaced(3, 4).tolist() == [0, 1, 2]


def test_frames_from_rows_resizes_images_masks_and_landmarks(preprocess_output):
    rows = list(read_clip_rows(preprocess_output))
    assert len(rows) >= 2
    frames = frames_from_rows(rows, size=56, frames_per_clip=3)
    assert frames.images.shape == (3 * len(rows), 3, 56, 56)
    assert frames.masks.shape == (3 * len(rows), 1, 56, 56)
    assert frames.clip_ids.tolist() == [c for c in range(len(rows)) for _ in range(3)]
    first = rows[0]
    expected = first["landmarks"][evenly_spaced(first["num_frames"], 3)] * (56 / first["crop_size"])
    assert np.allclose(frames.landmarks[:3].numpy(), expected, atol=1e-4)
    # The pipeline's mask covers the face centre, not the corners, at the new size too.
    assert frames.masks[:, 0, 28, 28].all() and not frames.masks[:, 0, 0, 0].any()
