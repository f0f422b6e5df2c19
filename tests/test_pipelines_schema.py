"""The clip table contract: a real row passes validation and decodes; broken tables are refused."""

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.config import PreprocessConfig
from pipelines.inputs import make_input
from pipelines.landmarks import DlibLandmarker
from pipelines.masks import make_masker
from pipelines.schema import CLIP_SCHEMA, SchemaError, decode_clip_row, describe, validate_table
from pipelines.stages import process_input, rows_table
from sample_assets import sample_clip


@pytest.fixture(scope="module")
def clip_table() -> pa.Table:
    cfg = PreprocessConfig(max_frames=10)
    item = make_input(str(sample_clip("id10014/vretalk1")))
    rows = rows_table(process_input(item, cfg, DlibLandmarker(), make_masker("skin", cfg.skin_threshold)))
    return rows.filter(pc.equal(rows.column("row_kind"), "clip")).select(CLIP_SCHEMA.names).cast(CLIP_SCHEMA)


def test_real_row_validates_and_decodes(clip_table):
    validate_table(clip_table)
    clip = decode_clip_row(clip_table.to_pylist()[0])
    assert clip["frames"].shape == (10, 224, 224, 3)
    assert clip["frame_indices"].tolist() == list(range(10))
    assert (clip["source_width"], clip["source_height"]) == (700, 700)
    with av.open(str(sample_clip("id10014/vretalk1"))) as container:  # the header's frame count, recorded
        assert clip_table.column("header_frames")[0].as_py() == container.streams.video[0].frames > 10
    assert clip_table.column("presented_frames")[0].as_py() == 0  # stopped at max_frames: not counted
    # The stored transform takes source pixels into the crop: the landmarks it maps back to the
    # source frame lie inside it, on a face about a third of the 700 px frame wide.
    matrix = clip["crop_transforms"][0]
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    source = clip["landmarks"][0] @ inverse[:, :2].T + inverse[:, 2]
    assert (source > 0).all() and (source < 700).all()
    assert 150 < np.ptp(source[:, 0]) < 500


def replace_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_broken_tables_are_refused(clip_table):
    with pytest.raises(SchemaError, match="missing columns: fps"):
        validate_table(clip_table.drop_columns(["fps"]))
    short = pa.array([row[:-2] for row in clip_table.column("landmarks").to_pylist()], pa.list_(pa.float32()))
    with pytest.raises(SchemaError, match="landmarks does not hold 136"):
        validate_table(replace_column(clip_table, "landmarks", short))
    with pytest.raises(SchemaError, match="type"):
        validate_table(replace_column(clip_table, "fps", pa.array([25.0] * clip_table.num_rows, pa.float64())))
    with pytest.raises(SchemaError, match="segment_key is not unique"):
        validate_table(pa.concat_tables([clip_table, clip_table]))


def test_every_column_is_documented():
    text = describe()
    assert all(f"  {name} (" in text for name in CLIP_SCHEMA.names)
