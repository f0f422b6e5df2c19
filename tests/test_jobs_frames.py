import numpy as np
import pytest

from bad_clips import write_rows
from jobs.frames import evenly_spaced, frames_from_rows, read_clip_rows


@pytest.fixture(scope="module")
def preprocess_output(tmp_path_factory, sample_clips):
    """A preprocess output holding two real clips (of the sample clips), written as the pipeline's sink does."""
    rows = [row for row in sample_clips[1] if row["speaker_id"] in ("id10001", "id10019")]
    root = tmp_path_factory.mktemp("preprocessed")
    (root / "clips").mkdir()
    write_rows(root / "clips" / "part-0.parquet", rows)
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
