"""Clip data broken the ways a corpus at scale breaks (partial copies, other writers, bad frames), for the tests of
the data-error policy (jobs/data_errors.py): each broken row or file with the reason the policy must give."""

import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.schema import CLIP_SCHEMA


def broken_rows(row: dict) -> dict[str, dict]:
    """Copies of a real clip row (of 3 frames or more), each broken one way, under segment keys of their own:
    the words its reason must contain -> the row."""
    count = row["num_frames"]

    def renamed(name: str, **changes) -> dict:
        return dict(row, segment_key=f"{row['segment_key']}/{name}", **changes)

    return {
        "does not decode": renamed("undecodable", frames_jpeg=[b"not a jpeg"] * count),
        "values for": renamed("miscounted", landmarks=row["landmarks"][:-136]),  # a frame's landmarks missing
        "non-finite landmarks": renamed("nan", landmarks=[math.nan] * len(row["landmarks"])),
        "fewer than the": renamed("short", num_frames=2, frames_jpeg=row["frames_jpeg"][:2],
                                  masks_png=row["masks_png"][:2], landmarks=row["landmarks"][:2 * 136],
                                  frame_indices=row["frame_indices"][:2], crop_transforms=row["crop_transforms"][:12]),
    }


def write_rows(path: Path, rows: list[dict], row_group_size: int | None = None) -> None:
    pq.write_table(pa.Table.from_pylist([{name: row[name] for name in CLIP_SCHEMA.names} for row in rows],
                                        schema=CLIP_SCHEMA), path, row_group_size=row_group_size)


def write_corrupt_page(path: Path, rows: list[dict]) -> None:
    """The rows one row group each, then the page headers of the last row group overwritten: the footer reads,
    the last row group does not (a flipped block in a copied file)."""
    write_rows(path, rows, row_group_size=1)
    metadata = pq.read_metadata(path)
    group = metadata.row_group(metadata.num_row_groups - 1)
    data = bytearray(path.read_bytes())
    for column in range(group.num_columns):
        start = group.column(column).data_page_offset
        data[start:start + 12] = b"\xff" * 12
    path.write_bytes(bytes(data))


def truncate(source: Path, target: Path) -> None:
    """The first half of a Parquet file: what an interrupted copy or upload leaves (no footer)."""
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


def write_other_schema(path: Path) -> None:
    """A Parquet file of another table (no clip columns but segment_key)."""
    pq.write_table(pa.table({"segment_key": ["other/0"], "score": [0.5]}), path)


def write_wrong_type(path: Path, rows: list[dict]) -> None:
    """Clip rows with float64 landmarks (a writer that kept NumPy's default), not the schema's float32."""
    schema = pa.schema([pa.field(field.name, pa.list_(pa.float64()), nullable=False) if field.name == "landmarks"
                        else field for field in CLIP_SCHEMA])
    pq.write_table(pa.Table.from_pylist([{name: row[name] for name in schema.names} for row in rows], schema=schema),
                   path)


def broken_corpus(target: Path, good: Path, rows: list[dict]) -> dict[str, str]:
    """target/clips: the clip files of the preprocess output `good`, a file of broken rows (those of
    `broken_rows(rows[0])` and one good row), a truncated copy of a good file, a file of another schema, a file
    whose landmarks column has another type and a file whose one row group does not read behind a good footer.
    Returns what must be skipped: "file" or "file/segment_key" -> words of the reason (rows shorter than a
    sample needs included; readers that need fewer frames keep them)."""
    clips = target / "clips"
    clips.mkdir(parents=True)
    for file in sorted((good / "clips").glob("*.parquet")):
        shutil.copy(file, clips / file.name)
    broken = broken_rows(rows[0])
    good_copy = dict(rows[1], segment_key=f"{rows[1]['segment_key']}/copy")
    write_rows(clips / "part-broken-rows.parquet", [*broken.values(), good_copy])
    truncate(sorted((good / "clips").glob("*.parquet"))[0], clips / "part-truncated.parquet")
    write_other_schema(clips / "part-other-schema.parquet")
    write_wrong_type(clips / "part-wrong-type.parquet", [dict(rows[3], segment_key=f"{rows[3]['segment_key']}/f64")])
    write_corrupt_page(clips / "part-corrupt-page.parquet", [dict(rows[2], segment_key=f"{rows[2]['segment_key']}/page")])
    expected = {f"{clips / 'part-broken-rows.parquet'}/{row['segment_key']}": reason for reason, row in broken.items()}
    expected[str(clips / "part-truncated.parquet")] = "not a readable Parquet file"
    expected[str(clips / "part-other-schema.parquet")] = "is missing"
    expected[str(clips / "part-wrong-type.parquet")] = "column landmarks is list<element: double>"
    expected[f"{clips / 'part-corrupt-page.parquet'}/row group 0"] = "unreadable"
    return expected
