"""The Ray Data job end to end on the real sample: rows for every clip, schema round trip, masks,
bad inputs, resume after a kill, and the command line's errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.config import PreprocessConfig
from sample_assets import asset_dir, sample_clip, sample_clip_names
from video_files import encode
from pipelines.inputs import discover_inputs
from pipelines.output import Output
from pipelines.preprocess import init_local_ray, run
from pipelines.schema import decode_clip_row, validate_rejects, validate_table

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH_BEFORE_RAY = os.environ.get("PYTHONPATH")
FAST = ["--max-frames", "16"]
# id10006/pcavs00002 turns to profile in frames 4-23, where dlib's frontal detector finds no face.
SAMPLE_ARGS = ["--max-frames", "40"]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    init_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_local_ray_workers_import_this_checkout_and_the_driver_environment_is_left_alone(local_ray):
    import ray

    @ray.remote
    def worker_path():
        import pipelines

        return sys.path, os.path.dirname(os.path.dirname(os.path.abspath(pipelines.__file__)))

    path, package_root = ray.get(worker_path.remote())
    assert str(ROOT) in path and package_root == str(ROOT)
    assert os.environ.get("PYTHONPATH") == PYTHONPATH_BEFORE_RAY  # set only while the local Ray started


def read_all(directory: Path, kind: str):
    files = sorted((directory / kind).glob("part-*.parquet"))
    return pq.read_table([str(path) for path in files]) if files else None


@pytest.fixture(scope="module")
def sample_output(local_ray, tmp_path_factory):
    output = tmp_path_factory.mktemp("sample_clips")
    assert run(["--input", str(asset_dir("voxceleb_sample")), "--output", str(output)] + SAMPLE_ARGS) == 0
    return output


def test_every_sample_clip_yields_rows(sample_output):
    summary = json.loads((sample_output / "summary.json").read_text())
    assert summary["inputs"] == summary["accepted_inputs"] == 28
    assert summary["rejected_inputs"] == 0 and summary["balanced"]
    clips = read_all(sample_output, "clips")
    expected = {item.input_id for item in discover_inputs(str(asset_dir("voxceleb_sample")))}
    assert set(clips.column("input_id").to_pylist()) == expected
    assert summary["frames"] == sum(clips.column("num_frames").to_pylist()) >= 27 * 40


def test_parquet_round_trip_through_the_schema(sample_output):
    clips = read_all(sample_output, "clips")
    validate_table(clips)
    for row in clips.slice(0, 4).to_pylist():
        clip = decode_clip_row(row)
        count = clip["num_frames"]
        assert clip["frames"].shape == (count, 224, 224, 3) and clip["frames"].dtype == np.uint8
        assert clip["masks"].shape == (count, 224, 224) and set(np.unique(clip["masks"])) <= {0, 1}
        assert clip["landmarks"].shape == (count, 68, 2) and clip["landmarks"].dtype == np.float32
        assert clip["crop_transforms"].shape == (count, 2, 3)
        assert np.all(np.diff(clip["frame_indices"]) > 0)
        assert clip["settings"]["max_frames"] == 40 and clip["landmark_backend"] == "mediapipe"
        # The face sits in the middle of the crop, eyes level.
        eyes = clip["landmarks"][:, 36:48].mean(axis=1)
        assert np.all(np.abs(eyes - [112, 100]) < 40)


def test_masks_cover_the_face_centre_and_exclude_background_corners(sample_output):
    centre_cover, corner_cover = [], []
    for row in read_all(sample_output, "clips").to_pylist():
        clip = decode_clip_row(row)
        for mask, points in zip(clip["masks"], clip["landmarks"]):
            # Around the nose (between the nose bridge and the nostrils).
            x, y = np.round(points[[28, 29, 30, 33]] - 0.5).astype(int).T
            centre_cover.append(mask[y, x].mean())
            corner_cover.append(np.mean([mask[:20, :20].mean(), mask[:20, -20:].mean(), mask[-20:, :20].mean(), mask[-20:, -20:].mean()]))
    # Measured 0.96 with mediapipe's landmarks (its nose bottom, 33, sits on the nostrils' shadow more often than
    # dlib's, which gave 0.97+); a mask that missed the face would be far below.
    assert np.mean(centre_cover) > 0.95
    assert np.mean(corner_cover) < 0.01


def write_video(path: Path, frames: np.ndarray, color: bool = True) -> Path:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height), color)
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if color else frame)
    writer.release()
    return path


def make_bad_inputs(directory: Path) -> dict[str, str]:
    """Bad videos made from real sample frames -> the reject reason each must get."""
    import decord

    frames = decord.VideoReader(str(sample_clip("id10019/lpd0"))).get_batch(list(range(30))).asnumpy()
    (directory / "zero.mp4").write_bytes(b"")
    (directory / "text.mp4").write_text("not a video\n" * 50)
    whole = write_video(directory / "whole.mp4", frames).read_bytes()
    (directory / "whole.mp4").unlink()
    (directory / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    # No face: the background strip above the head, scaled up.
    write_video(directory / "noface.mp4", np.stack([cv2.resize(f[:60, :200], (320, 96)) for f in frames]))
    write_video(directory / "tiny.mp4", np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames]))
    write_video(directory / "gray.mp4", np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]), color=False)
    return {
        "zero": "empty",
        "text": "unreadable",
        "truncated": "truncated",
        "noface": "no_face",
        "tiny": "too_small",
        "gray": "grayscale",
        "missing": "unreadable",
    }


def test_bad_inputs_are_rejected_with_their_reason_and_the_run_completes(local_ray, tmp_path):
    expected = make_bad_inputs(tmp_path)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker_id"])
        writer.writerow([str(sample_clip("id10002/pcavs00086")), "good"])
        for name in expected:
            writer.writerow([f"{name}.mp4", "bad"])  # relative to the manifest
    output = tmp_path / "out"
    assert run(["--input", str(manifest), "--output", str(output)] + FAST) == 0
    rejects = read_all(output, "rejects")
    validate_rejects(rejects)
    found = {Path(row["source_path"]).stem: row["reason"] for row in rejects.to_pylist()}
    assert found == expected
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["inputs"], summary["accepted_inputs"], summary["rejected_inputs"]) == (8, 1, 7)
    assert summary["rejects_by_reason"] == {"empty": 1, "grayscale": 1, "no_face": 1, "too_small": 1, "truncated": 1, "unreadable": 2}
    assert read_all(output, "clips").column("speaker_id").to_pylist() == ["good"]


def write_manifest(path: Path, clips: list[str]) -> Path:
    """A manifest of sample clips named "speaker/video"."""
    path.write_text("path\n" + "".join(f"{sample_clip(clip)}\n" for clip in clips))
    return path


SUBSET = sample_clip_names()[:6]


def test_resumed_run_processes_only_the_rest(local_ray, tmp_path):
    output = tmp_path / "out"
    assert run(["--input", str(write_manifest(tmp_path / "a.csv", SUBSET[:3])), "--output", str(output)] + FAST) == 0
    assert run(["--input", str(write_manifest(tmp_path / "b.csv", SUBSET)), "--output", str(output)] + FAST) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["run"]["inputs_skipped"] == 3 and summary["run"]["inputs_processed"] == 3
    keys = read_all(output, "clips").column("segment_key").to_pylist()
    assert len(keys) == len(set(keys)) == 6


def test_transient_failure_is_retried_by_the_next_run(local_ray, tmp_path):
    """A decode that runs out of time is not a final answer: the next run processes the input again."""
    output = tmp_path / "out"
    args = ["--input", str(write_manifest(tmp_path / "t.csv", SUBSET[:2])), "--output", str(output)] + FAST
    assert run(args + ["--decode-timeout", "0.01"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["retry_inputs"] == 2 and summary["retry_by_reason"] == {"timeout": 2}
    assert summary["accepted_inputs"] == summary["rejected_inputs"] == 0 and summary["balanced"]
    assert len(list((output / "retry").glob("part-*.parquet"))) == 2
    assert run(args) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["run"]["inputs_processed"] == 2 and summary["accepted_inputs"] == 2
    assert summary["retry_inputs"] == 0 and not list((output / "retry").glob("part-*.parquet"))


def phone_video(path: Path) -> Path:
    """A sample clip as a phone stores portrait video: the picture on its side plus a display rotation."""
    import av

    with av.open(str(sample_clip("id10019/lpd0"))) as container:
        frames = [frame.to_ndarray(format="rgb24")[:, 96:416] for _, frame in zip(range(16), container.decode(video=0))]
    return encode(path, np.rot90(np.stack(frames), 1, axes=(1, 2)), b_frames=0, display_rotation=-90)


def test_redo_rejects_turns_an_earlier_runs_reject_into_clips(local_ray, tmp_path):
    """An output from before a fix (0.3.0 rejected rotated phone videos as no_face) is brought up to date
    by --redo-rejects; without it a reject is a final answer."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{phone_video(tmp_path / 'phone.mp4')}\n{sample_clip(SUBSET[0])}\n")
    output = tmp_path / "out"
    args = ["--input", str(manifest), "--output", str(output)] + FAST
    assert run(args) == 0
    (phone,) = [item for item in discover_inputs(str(manifest)) if item.path.endswith("phone.mp4")]
    store = Output(str(output))  # as the earlier pipeline left it: the phone video rejected
    (output / "clips" / f"part-{phone.input_id}.parquet").unlink()
    store.write_part("reject", phone.input_id, reject_row_table(phone, "no_face"))
    assert run(args) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["run"]["inputs_processed"] == 0 and summary["rejected_inputs"] == 1
    assert run(args + ["--redo-rejects"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["run"]["inputs_processed"] == 1 and summary["run"]["inputs_skipped"] == 1
    assert (summary["accepted_inputs"], summary["rejected_inputs"], summary["balanced"]) == (2, 0, True)
    assert not list((output / "rejects").glob("part-*.parquet"))
    phone_rows = read_all(output, "clips").filter(pc.equal(pc.field("input_id"), phone.input_id))
    assert phone_rows.num_rows >= 1 and phone_rows.column("source_width")[0].as_py() == 320


def reject_row_table(item, reason: str):
    import pyarrow as pa

    from pipelines.schema import REJECT_SCHEMA

    row = dict(input_id=item.input_id, source_path=item.path, speaker_id=item.speaker_id, video_id=item.video_id,
               clip_id=item.clip_id, stage="landmarks", reason=reason, error="", pipeline_version="0.3.0")
    return pa.Table.from_pylist([row], schema=REJECT_SCHEMA)


def test_landmark_actor_pool_writes_the_same_clips_as_fused_tasks(local_ray, tmp_path):
    """The GPU layout (every stage of an input on an actor that keeps the landmark model loaded), here on
    CPU actors."""
    manifest = write_manifest(tmp_path / "a.csv", SUBSET[:3])
    rows = {}
    for layout, extra in (("fused", []), ("actors", ["--landmark-actors", "1"])):
        assert run(["--input", str(manifest), "--output", str(tmp_path / layout)] + FAST + extra) == 0
        table = read_all(tmp_path / layout, "clips").sort_by("segment_key")
        rows[layout] = table.select(["segment_key", "frame_indices", "landmarks"]).to_pylist()
    assert rows["fused"] == rows["actors"]


def test_no_tracking_and_max_segment_frames_change_the_written_clips(local_ray, tmp_path):
    """--no-tracking: every frame's landmarks are the detector's (as the pipeline gives them untracked in this
    process), not the tracked ones. --max-segment-frames 5: the 16-frame face track is written as 4 clips of 4
    frames, which together hold the frames of the one clip written without it."""
    from pipelines.inputs import make_input
    from pipelines.landmarks import make_landmarker
    from pipelines.masks import make_masker
    from pipelines.stages import process_input

    manifest = write_manifest(tmp_path / "one.csv", SUBSET[:1])
    clips = {}
    for name, extra in (("tracked", []), ("untracked", ["--no-tracking"]),
                        ("cut", ["--max-segment-frames", "5", "--min-segment-frames", "4"])):
        assert run(["--input", str(manifest), "--output", str(tmp_path / name)] + FAST + extra) == 0
        clips[name] = read_all(tmp_path / name, "clips").sort_by("segment_key").to_pylist()
    (tracked,), (untracked,) = clips["tracked"], clips["untracked"]
    assert tracked["frame_indices"] == untracked["frame_indices"] == list(range(16))
    cfg = PreprocessConfig(max_frames=16, tracking=False)
    (detected,) = process_input(make_input(str(sample_clip(SUBSET[0]))), cfg, make_landmarker(cfg),
                                make_masker(cfg.mask_backend, cfg.skin_threshold))
    assert np.allclose(untracked["landmarks"], detected["landmarks"], atol=1e-3)
    assert not np.allclose(tracked["landmarks"], detected["landmarks"], atol=1e-3)
    assert [clip["num_frames"] for clip in clips["cut"]] == [4, 4, 4, 4]
    assert [clip["segment_key"] for clip in clips["cut"]] == [f"{tracked['segment_key'][:-3]}{index:03d}"
                                                             for index in range(4)]
    assert sum((clip["frame_indices"] for clip in clips["cut"]), []) == tracked["frame_indices"]


def settled_files(folder: Path, pattern: str, quiet_seconds: float = 2.0) -> list[Path]:
    """The files matching `pattern` once none has appeared for `quiet_seconds`: a Ray worker outside the
    killed process group can still finish the file it was writing."""
    files, since = sorted(folder.glob(pattern)), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        time.sleep(0.2)
        now = sorted(folder.glob(pattern))
        if now != files:
            files, since = now, time.monotonic()
    return files


def test_killed_run_keeps_every_finished_input(local_ray, tmp_path):
    """SIGKILL of the driver and its Ray: every input finished before the kill is on disk, whole,
    and the next run does only the others."""
    output = tmp_path / "out"
    args = ["--input", str(write_manifest(tmp_path / "k.csv", SUBSET)), "--output", str(output)] + FAST
    command = [sys.executable, "-m", "pipelines.preprocess"] + args + ["--num-cpus", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list((output / "clips").glob("part-*.parquet"))) < 2:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the local Ray it started
    process.wait()
    finished = settled_files(output / "clips", "part-*.parquet")
    assert 2 <= len(finished) < len(SUBSET)
    for path in finished:  # whole files: all segments of their input
        table = pq.read_table(path)
        validate_table(table)
        assert table.num_rows == table.column("num_segments")[0].as_py()
    assert run(args) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["run"]["inputs_skipped"] == len(finished)
    assert summary["balanced"] and summary["inputs"] == 6 and summary["duplicate_clip_rows"] == 0
    keys = read_all(output, "clips").column("segment_key").to_pylist()
    assert len(keys) == len(set(keys)) == 6


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "/no/such/dir", "--output", "OUT"], "input not found: /no/such/dir"),
        (["--input", str(asset_dir("voxceleb_sample")), "--output", "OUT", "--frame-stride", "0"], "frame_stride must be >= 1"),
        (["--input", str(asset_dir("voxceleb_sample")), "--output", "OUT", "--detector", "hog"], "invalid choice: 'hog'"),
        (["--output", "OUT"], "required: --input"),
    ],
)
def test_bad_configuration_is_one_error_line(tmp_path, args, message):
    result = run_cli(*[str(tmp_path / "out") if arg == "OUT" else arg for arg in args])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--landmark-actors", "2,2"], "2 landmark actors x 1 CPUs leave the listing less than 1 of the cluster's 2 CPUs"),
        (["--cpus-per-task", "3"], "--cpus-per-task 3 is more than the cluster's 2 CPUs"),
    ],
)
def test_a_layout_the_local_ray_cannot_start_is_refused_instead_of_waiting_forever(tmp_path, args, message):
    # Before, both waited forever: the two actors held both CPUs and the listing that feeds them had none;
    # a 3-CPU task never fits 2 CPUs.
    result = run_cli("--input", str(asset_dir("voxceleb_sample")), "--output", str(tmp_path / "out"), "--num-cpus", "2",
                     *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("preprocess: error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "clips").exists()


def test_output_written_with_other_settings_is_refused(tmp_path):
    output = tmp_path / "out"
    Output(str(output)).check_settings(PreprocessConfig(frame_stride=2).output_settings())
    result = run_cli("--input", str(asset_dir("voxceleb_sample")), "--output", str(output))
    assert result.returncode == 2 and "other settings (frame_stride);" in result.stderr


def write_large_manifest(path: Path, rows: int) -> Path:
    path.write_text("path,speaker_id\n" + "".join(f"clips/{index:06d}.mp4,id{index % 997:05d}\n" for index in range(rows)))
    return path


def test_a_large_manifest_costs_the_driver_nothing_per_input(local_ray, tmp_path):
    """The driver only plans: listing, canonical locations and the already-done check run in tasks.
    Stated bounds for 100 k rows: under 1 s and 10 MB of driver allocations before the first task
    (measured 0.01 s and well under 1 MB), under 50 MB while the listing runs; every input comes out
    of the listing stage. Before, the driver built every input first (about 24 min and 5 GB at 1 M)."""
    import tracemalloc

    from pipelines.inputs import input_source
    from pipelines.preprocess import resolved_inputs

    output = str(tmp_path / "out")
    resolved_inputs(input_source(str(write_large_manifest(tmp_path / "small.csv", 10))), output)  # imports
    manifest = write_large_manifest(tmp_path / "large.csv", 100_000)
    tracemalloc.start()
    started = time.monotonic()
    resolved = resolved_inputs(input_source(str(manifest)), output)
    planning_s = time.monotonic() - started
    _, planning_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    listing_started = time.monotonic()
    count = resolved.count()
    print(f"planning {planning_s:.3f} s, {planning_peak / 1e6:.2f} MB; listing {time.monotonic() - listing_started:.1f} s")
    _, running_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert planning_s < 1.0 and planning_peak < 10e6, (planning_s, planning_peak)
    assert running_peak < 50e6, running_peak
    assert count == 100_000
