"""Output directory and input identity: atomic per-input files, two runs on one output, one identity
per file whatever the spelling, no colliding keys."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import PreprocessConfig
from pipelines.inputs import discover_inputs, make_input
from pipelines.output import Output
from pipelines.preprocess import build_parser, config_from_args
from pipelines.schema import REJECT_SCHEMA


def reject_table(input_id: str, reason: str) -> pa.Table:
    row = dict(input_id=input_id, source_path="/x.mp4", speaker_id="s", video_id="v", clip_id="c")
    row.update(stage="decode", reason=reason, error="", pipeline_version="test")
    return pa.Table.from_pylist([row], schema=REJECT_SCHEMA)


def test_a_second_run_starting_does_not_delete_a_running_writer_s_file(tmp_path):
    first, second = Output(str(tmp_path)), Output(str(tmp_path))
    writer = first.writer("reject", "aaaa")
    writer.write(reject_table("aaaa", "no_face"))
    second.remove_stale_temporaries()  # what another run does when it starts on the same output
    path = writer.commit()
    assert pq.read_table(path).column("input_id").to_pylist() == ["aaaa"]
    assert first.done(["aaaa", "bbbb"]) == [True, False]


def test_stale_temporaries_of_a_dead_run_are_removed(tmp_path):
    output = Output(str(tmp_path))
    writer = output.writer("reject", "aaaa")
    writer.write(reject_table("aaaa", "no_face"))
    os.utime(writer.temporary, (1, 1))  # last written long ago: its run is gone
    assert output.remove_stale_temporaries() == 1
    assert not os.path.exists(writer.temporary)


def test_rewriting_an_input_replaces_its_file_whole(tmp_path):
    output = Output(str(tmp_path))
    output.write_part("reject", "aaaa", reject_table("aaaa", "no_face"))
    writer = output.writer("reject", "aaaa")
    writer.write(reject_table("aaaa", "too_short"))
    # Until the commit, readers see the old file, whole.
    assert pq.read_table(output.part_path("reject", "aaaa")).column("reason").to_pylist() == ["no_face"]
    writer.commit()
    assert pq.read_table(output.part_path("reject", "aaaa")).column("reason").to_pylist() == ["too_short"]
    assert output.part_files("reject") == [output.part_path("reject", "aaaa")]


def test_a_finished_input_clears_its_transient_failure(tmp_path):
    output = Output(str(tmp_path))
    output.write_part("retry", "aaaa", reject_table("aaaa", "timeout"))
    assert output.done(["aaaa"]) == [False]
    summary = output.summary(pa.array(["aaaa"]))
    assert summary["retry_inputs"] == 1 and summary["balanced"]
    output.write_part("reject", "aaaa", reject_table("aaaa", "no_face"))
    assert output.done(["aaaa"]) == [True] and output.part_files("retry") == []


def test_one_file_is_one_input_whatever_the_spelling(tmp_path, monkeypatch):
    video = tmp_path / "id1" / "v1" / "00001.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x")
    (tmp_path / "alias").symlink_to(tmp_path / "id1")
    monkeypatch.chdir(tmp_path / "id1")
    spellings = [str(video), "v1/00001.mp4", "./v1/../v1//00001.mp4", str(tmp_path / "alias" / "v1" / "00001.mp4")]
    items = [make_input(spelling) for spelling in spellings]
    assert len({item.input_id for item in items}) == 1
    assert {item.path for item in items} == {str(video.resolve())}
    # Manifest entries relative to the manifest's directory.
    assert make_input("id1/v1/00001.mp4", base=str(tmp_path)).input_id == items[0].input_id
    assert make_input("s3://Bucket/a//b/./c.mp4").input_id == make_input("S3://bucket/a/b/c.mp4").input_id


def test_same_stem_and_symlink_loops_never_collide(tmp_path):
    clip_dir = tmp_path / "id1" / "v1"
    clip_dir.mkdir(parents=True)
    for name in ("00001.mp4", "00001.avi", "00002.mp4"):
        (clip_dir / name).write_bytes(b"x")
    (clip_dir / "loop").symlink_to(tmp_path)  # a symlink loop back to the root
    items = discover_inputs(str(tmp_path))
    assert sorted(item.clip_id for item in items) == ["00001", "00001.avi", "00002"]
    assert len({item.input_id for item in items}) == 3
    assert {(item.speaker_id, item.video_id) for item in items} == {("id1", "v1")}


@pytest.mark.parametrize("loop", [False, True])
def test_tree_listing_visits_each_file_once(tmp_path, loop):
    for speaker in range(3):
        for clip in range(4):
            path = tmp_path / f"id{speaker}" / "v" / f"{clip:05d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    if loop:
        (tmp_path / "id0" / "v" / "up").symlink_to(tmp_path)
    from pipelines.inputs import walk_tree

    listed = [path for batch in walk_tree(str(tmp_path)) for path in batch.column("path").to_pylist()]
    assert len(listed) == len(set(listed)) == 12
    assert all(Path(path).is_relative_to(tmp_path) for path in listed)


def test_each_listed_batch_starts_with_its_largest_files(tmp_path, monkeypatch):
    """Inputs start in listing order: the largest (longest) videos of a batch first, so that none of
    them starts last and keeps one worker busy while the others idle."""
    import pipelines.inputs

    monkeypatch.setattr(pipelines.inputs, "LISTING_BATCH", 4)
    sizes = [3, 40, 7, 12, 500, 1, 90]
    for number, size in enumerate(sizes):
        (tmp_path / "id0" / "v").mkdir(parents=True, exist_ok=True)
        (tmp_path / "id0" / "v" / f"{number:05d}.mp4").write_bytes(b"x" * size)
    batches = [
        [Path(path).stat().st_size for path in batch.column("path").to_pylist()]
        for batch in pipelines.inputs.walk_tree(str(tmp_path))
    ]
    assert batches == [[40, 12, 7, 3], [500, 90, 1]]  # batches in name order, each largest first


def test_what_a_tree_listing_cannot_read_is_named_not_passed_over(tmp_path, monkeypatch, capsys):
    (tmp_path / "speaker" / "video").mkdir(parents=True)
    (tmp_path / "speaker" / "video" / "00001.mp4").write_bytes(b"video")
    (tmp_path / "speaker" / "video" / "00002.mp4").symlink_to(tmp_path / "moved-away.mp4")
    (tmp_path / "locked").mkdir()
    scandir = os.scandir

    def without_permission(path):  # tests run as root, whom permissions do not stop
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", without_permission)
    assert [Path(item.path).name for item in discover_inputs(str(tmp_path))] == ["00001.mp4"]
    warnings = capsys.readouterr().err
    assert f"cannot list {tmp_path / 'locked'} (Permission denied)" in warnings
    assert f"cannot read {tmp_path / 'speaker' / 'video' / '00002.mp4'} (not a file: a broken link?)" in warnings


def test_an_image_folder_lists_every_image(tmp_path):
    for name in ("a.jpg", "b.PNG", "notes.txt"):
        (tmp_path / "photos" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "photos" / name).write_bytes(b"x")
    items = discover_inputs(str(tmp_path))
    assert sorted(item.clip_id for item in items) == ["a.jpg", "b.PNG"]


def test_a_setting_added_after_an_output_was_written_counts_as_its_default_there(tmp_path):
    """run_config.json from before `dlib_cnn_fallback` existed: resuming with the default is allowed,
    with the fallback on it is refused."""
    defaults = PreprocessConfig().output_settings()
    older = {key: value for key, value in defaults.items() if not key.startswith("dlib_cnn")}
    Output(str(tmp_path)).check_settings(older)
    Output(str(tmp_path)).check_settings(PreprocessConfig().output_settings(), defaults=defaults)
    with pytest.raises(ValueError, match=r"other settings \(dlib_cnn_fallback\)"):
        Output(str(tmp_path)).check_settings(PreprocessConfig(dlib_cnn_fallback=True).output_settings(), defaults)


def test_an_output_from_pipeline_0_2_is_resumed_only_with_its_settings(tmp_path):
    """Its masks were made without memory and its tracker re-centred every frame, one frame per batch:
    the new defaults are refused, and the command-line flags that restore 0.2's behaviour resume it."""
    added = ("mask_boundary_memory", "mask_pixel_memory", "mask_dark_tolerance", "recentre_tolerance", "track_window")
    older = {key: value for key, value in PreprocessConfig().output_settings().items() if key not in added}
    Output(str(tmp_path)).check_settings(older)
    defaults = PreprocessConfig.settings_of_older_outputs()
    with pytest.raises(ValueError, match=r"other settings \(mask_boundary_memory, mask_dark_tolerance, mask_pixel_memory, recentre_tolerance, track_window\)"):
        Output(str(tmp_path)).check_settings(PreprocessConfig().output_settings(), defaults)
    flags = ["--recentre-tolerance", "0", "--track-window", "1", "--mask-memory", "0", "0", "--mask-dark-tolerance", "0"]
    args = build_parser().parse_args(["--input", "in", "--output", str(tmp_path)] + flags)
    Output(str(tmp_path)).check_settings(config_from_args(args).output_settings(), defaults)