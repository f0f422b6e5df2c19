"""The data-error policy (jobs/data_errors.py) on real clip rows broken the ways corpora break: files checked by
their footers, rows skipped where they are read, each skip named once, the job stopped only past the bound."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bad_clips import broken_corpus, broken_rows, truncate, write_corrupt_page, write_other_schema, write_rows
from jobs.data import draw_clip_frames, holdout_rows, read_frames, training_corpus
from jobs.data_errors import DataError, Skip, SkipList, files_verdict, read_clip_file, survey
from jobs.frames import read_clip_rows
from pipelines.schema import CLIP_SCHEMA


def _numpy_rows(rows: list[dict], file: str = "f.parquet") -> dict:
    """The column batch Ray Data hands to the map (numpy, with read_parquet's path column)."""
    batch = {name: np.array([row[name] for row in rows] + [None], dtype=object)[:-1] for name in rows[0]}
    return batch | {"path": np.array([file] * len(rows), dtype=object)}


def _skipped(skips) -> dict[str, str]:
    return {f"{skip.file}/{skip.segment_key}" if skip.segment_key else skip.file: skip.reason for skip in skips}


def test_a_truncated_file_and_a_file_of_another_schema_are_skipped_by_their_footers(sample_clips, tmp_path):
    data, _ = sample_clips
    (tmp_path / "clips").mkdir()
    good = sorted((data / "clips").glob("*.parquet"))
    truncate(good[0], tmp_path / "clips" / "a-truncated.parquet")
    write_other_schema(tmp_path / "clips" / "b-other.parquet")
    (tmp_path / "clips" / "c-good.parquet").write_bytes(good[1].read_bytes())
    corpus = training_corpus(str(tmp_path))
    assert corpus.files == [str(tmp_path / "clips" / "c-good.parquet")]
    reasons = _skipped(corpus.skips)
    assert "Parquet magic bytes not found" in reasons[str(tmp_path / "clips" / "a-truncated.parquet")]
    assert reasons[str(tmp_path / "clips" / "b-other.parquet")] == "not a clip file: column speaker_id is missing"
    # The truncated file stands for the mean rows of a readable file (2), the other one for its own row (1).
    assert [skip.samples for skip in corpus.skips] == [2, 1] and corpus.samples == 5


def test_a_row_group_that_does_not_read_behind_a_good_footer_is_skipped_and_the_others_are_read(sample_clips,
                                                                                             tmp_path):
    _, rows = sample_clips
    (tmp_path / "clips").mkdir()
    path = tmp_path / "clips" / "a.parquet"
    write_corrupt_page(path, rows[:2])
    corpus = survey(str(tmp_path), CLIP_SCHEMA.names)
    assert corpus.files == [str(path)] and corpus.skips == []  # the footer is fine
    table, skip = list(read_clip_file(corpus.fs, str(path), ["segment_key"]))
    assert table.column("segment_key").to_pylist() == [rows[0]["segment_key"]]
    assert (skip.file, skip.segment_key, skip.samples) == (str(path), "row group 1", 1)
    assert skip.reason.startswith("unreadable (") and "\n" not in skip.line() and skip.line().isprintable()


@pytest.mark.parametrize("reason", ["does not decode", "values for", "non-finite landmarks", "fewer than the"])
def test_a_row_that_cannot_give_a_sample_is_skipped_and_named_and_the_others_are_not(sample_clips, reason):
    _, rows = sample_clips
    bad = broken_rows(rows[0])[reason]
    skips = []
    samples = draw_clip_frames(_numpy_rows([rows[1], bad, rows[2]]), frames=4, size=64, seed=0, draws=2,
                               report=skips.extend)
    assert list(samples["sample_key"]) == [rows[1]["segment_key"]] * 2 + [rows[2]["segment_key"]] * 2
    assert np.isfinite(samples["landmarks"]).all()
    assert len(skips) == 1 and skips[0].file == "f.parquet" and skips[0].segment_key == bad["segment_key"]
    assert reason in skips[0].reason


def test_a_directory_where_every_file_is_broken_is_one_error(tmp_path, sample_clips):
    data, _ = sample_clips
    (tmp_path / "clips").mkdir()
    truncate(sorted((data / "clips").glob("*.parquet"))[0], tmp_path / "clips" / "a.parquet")
    write_other_schema(tmp_path / "clips" / "b.parquet")
    with pytest.raises(DataError, match=r"none of its 2 clip files is readable \(first: .*a.parquet: not a readable"):
        training_corpus(str(tmp_path))


def test_the_skip_list_names_each_skip_once_and_stops_the_job_only_past_the_bound(tmp_path, capsys):
    path = tmp_path / "run" / "skipped.jsonl"
    skips = SkipList(str(path), max_fraction=0.25)
    skips.samples = 8
    row = Skip("a.parquet", "spk/vid/1/000", "non-finite landmarks")
    assert skips.add([row, Skip("b.parquet", "", "not a clip file", samples=1)]) == 2
    assert skips.add([row]) == 0  # the same row in a later pass
    assert capsys.readouterr().err.splitlines() == [
        "warning: skipped row spk/vid/1/000 of a.parquet: non-finite landmarks",
        "warning: skipped file b.parquet: not a clip file"]
    assert skips.status() == (2, False)  # 2 of 8: at the bound, not past it
    assert [json.loads(line)["segment_key"] for line in path.read_text().splitlines()] == ["spk/vid/1/000", ""]
    skips.add([Skip("a.parquet", "spk/vid/1/001", "a frame or mask does not decode")])
    assert skips.status() == (3, True)
    with pytest.raises(DataError, match=r"3 of 8 samples could not be read \(37.5%, above data.max_skipped_fraction "
                                        r"25.0%\) \(listed in .*skipped.jsonl\)"):
        skips.enforce()
    assert len(path.read_text().splitlines()) == 3


def test_a_resume_keeps_the_list_and_a_fixed_file_is_read_again(sample_clips, tmp_path, capsys):
    data, rows = sample_clips
    (tmp_path / "clips").mkdir()
    bad_file = tmp_path / "clips" / "part-bad.parquet"
    write_rows(bad_file, [broken_rows(rows[0])["non-finite landmarks"], rows[1]])
    write_other_schema(tmp_path / "clips" / "part-other.parquet")
    first = SkipList(str(tmp_path / "skipped.jsonl"), 1.0)
    list(read_clip_rows(tmp_path, first))
    assert len(first.entries) == 2
    capsys.readouterr()

    resumed = SkipList(str(tmp_path / "skipped.jsonl"), 1.0)
    resumed.track(training_corpus(str(tmp_path)))
    assert set(resumed.entries) == set(first.entries) and capsys.readouterr().err == ""  # kept, not named again

    write_rows(bad_file, [rows[0], rows[1]])  # the file is fixed (a new size and modification time)
    rerun = SkipList(str(tmp_path / "skipped.jsonl"), 1.0)
    keys = [row["segment_key"] for row in read_clip_rows(tmp_path, rerun)]
    assert keys == [rows[0]["segment_key"], rows[1]["segment_key"]]
    assert [entry["file"] for entry in rerun.entries.values()] == [str(tmp_path / "clips" / "part-other.parquet")]
    assert len((tmp_path / "skipped.jsonl").read_text().splitlines()) == 1


def test_the_files_that_fail_alone_can_stop_a_job_before_it_starts(sample_clips, tmp_path):
    data, _ = sample_clips
    (tmp_path / "clips").mkdir()
    for file in sorted((data / "clips").glob("*.parquet")):
        (tmp_path / "clips" / file.name).write_bytes(file.read_bytes())
    write_other_schema(tmp_path / "clips" / "x-other.parquet")
    corpus = training_corpus(str(tmp_path))  # 8 good rows, 1 row of another schema
    assert files_verdict([corpus], 0.2) is None
    assert files_verdict([corpus], 0.1) == ("1 of 9 samples could not be read (11.1%, above data.max_skipped_fraction "
                                            f"10.0%) (first: {tmp_path / 'clips' / 'x-other.parquet'}: not a clip "
                                            "file: column speaker_id is missing): fix or remove them, or raise the bound")


def test_held_apart_rows_are_chosen_among_readable_rows(sample_clips, tmp_path):
    _, rows = sample_clips
    (tmp_path / "clips").mkdir()
    broken = broken_rows(rows[0])
    # The first file (where held-apart rows are taken first) holds only rows that do not read.
    write_rows(tmp_path / "clips" / "a.parquet", [broken["does not decode"], broken["non-finite landmarks"]])
    write_rows(tmp_path / "clips" / "b.parquet", [rows[2], rows[1]])
    corpus = training_corpus(str(tmp_path))
    skips = SkipList(None, 1.0)
    chosen = holdout_rows(corpus, 2, skips)
    a, b = str(tmp_path / "clips" / "a.parquet"), str(tmp_path / "clips" / "b.parquet")
    assert chosen == [[b, key] for key in sorted([rows[1]["segment_key"], rows[2]["segment_key"]])]
    assert {(entry["file"], entry["segment_key"]): entry["reason"] for entry in skips.entries.values()} == {
        (a, broken["does not decode"]["segment_key"]): "a frame or mask does not decode",
        (a, broken["non-finite landmarks"]["segment_key"]): "non-finite landmarks"}
    frames = read_frames(str(tmp_path), chosen, 64)
    assert frames["images"].shape == (2, 64, 64, 3) and np.isfinite(frames["landmarks"]).all()


def test_a_held_apart_row_whose_row_group_no_longer_reads_is_left_out_of_the_grid(sample_clips, tmp_path):
    """The grid's frames are read again at the start of training: a held-apart row whose row group does not read
    then (a corrupt page behind a good footer) is skipped and named, the others' middle frames read."""
    _, rows = sample_clips
    (tmp_path / "clips").mkdir()
    path = tmp_path / "clips" / "a.parquet"
    write_corrupt_page(path, rows[:2])  # row group 1 (rows[1]) does not read
    skips = []
    frames = read_frames(str(tmp_path), [[str(path), rows[1]["segment_key"]], [str(path), rows[0]["segment_key"]]],
                         64, report=skips.extend)
    middle = rows[0]["num_frames"] // 2
    landmarks = np.asarray(rows[0]["landmarks"], np.float32).reshape(-1, 68, 2)[middle] * 64 / rows[0]["crop_size"]
    assert frames["images"].shape == (1, 64, 64, 3) and np.allclose(frames["landmarks"][0], landmarks)
    assert [(skip.file, skip.segment_key, skip.samples) for skip in skips] == [(str(path), "row group 1", 1)]
    assert skips[0].reason.startswith("unreadable (")


def test_evaluation_and_synthetic_readers_skip_bad_files_and_rows(sample_clips, tmp_path):
    """jobs.frames.read_clip_rows (jobs.eval --clips, jobs.synthetic_eval): every readable row, the others named."""
    data, rows = sample_clips
    expected = broken_corpus(tmp_path / "broken", data, rows)
    skips = SkipList(str(tmp_path / "skipped.jsonl"), 0.6)
    keys = [row["segment_key"] for row in read_clip_rows(tmp_path / "broken", skips)]
    short = broken_rows(rows[0])["fewer than the"]["segment_key"]
    assert sorted(keys) == sorted([row["segment_key"] for row in rows] + [short, f"{rows[1]['segment_key']}/copy"])
    del expected[next(key for key in expected if key.endswith(short))]  # two frames are enough here
    listed = {f"{entry['file']}/{entry['segment_key']}".rstrip("/"): entry["reason"]
              for entry in map(json.loads, (tmp_path / "skipped.jsonl").read_text().splitlines())}
    assert set(listed) == set(expected) and all(expected[key] in listed[key] for key in expected)
    with pytest.raises(DataError, match="above data.max_skipped_fraction 1.0%"):
        list(read_clip_rows(tmp_path / "broken"))  # the default bound


def test_the_policy_checks_the_columns_each_reader_needs(sample_clips, tmp_path):
    data, rows = sample_clips
    (tmp_path / "clips").mkdir()
    write_rows(tmp_path / "clips" / "a.parquet", rows[:2])
    schema = pa.schema([column for column in CLIP_SCHEMA if column.name != "settings_json"])
    pq.write_table(pa.Table.from_pylist([{name: row[name] for name in schema.names} for row in rows[2:4]], schema=schema),
                   tmp_path / "clips" / "b.parquet")
    assert len(training_corpus(str(tmp_path)).files) == 2  # training does not read settings_json
    corpus = survey(str(tmp_path), CLIP_SCHEMA.names)
    assert corpus.files == [str(tmp_path / "clips" / "a.parquet")]
    assert _skipped(corpus.skips) == {str(tmp_path / "clips" / "b.parquet"):
                                      "not a clip file: column settings_json is missing"}
