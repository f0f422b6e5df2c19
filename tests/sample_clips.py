"""Real clip rows in Parquet: sample clips through the preprocessing pipeline's own stages, written the way
`make preprocess` writes them (one part file per two inputs), for the training-job tests."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.inputs import make_input
from pipelines.landmarks import make_landmarker
from pipelines.masks import make_masker
from pipelines.schema import CLIP_SCHEMA
from pipelines.stages import process_input
from sample_assets import sample_clip
from sample_frames import CLIPS, PIPELINE


def write_clips(output, clips=CLIPS, rows_per_file: int = 2) -> list[dict]:
    """Run the pipeline on each clip, write its clip rows under output/clips; returns the rows."""
    landmarker = make_landmarker(PIPELINE)
    masker = make_masker(PIPELINE.mask_backend, PIPELINE.skin_threshold)
    rows = []
    for clip in clips:
        produced = process_input(make_input(str(sample_clip(clip))), PIPELINE, landmarker, masker)
        rows += [row for row in produced if row["row_kind"] == "clip"]
    (output / "clips").mkdir(parents=True, exist_ok=True)
    for start in range(0, len(rows), rows_per_file):
        table = pa.Table.from_pylist(rows[start:start + rows_per_file], schema=CLIP_SCHEMA)
        pq.write_table(table, output / "clips" / f"part-{start:05d}.parquet")
    return rows


@pytest.fixture(scope="session")
def sample_clips(tmp_path_factory):
    """(preprocess output directory, its clip rows) for 8 real clips, 16 frames each at most."""
    output = tmp_path_factory.mktemp("sample_clips")
    return output, write_clips(output)
