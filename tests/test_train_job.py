"""jobs/train.py end to end on Parquet written from the real sample: Ray Data ingest, Ray Train workers,
checkpoints, a killed worker, resume, MLflow. One Ray instance for the module (each start costs 6-11 s)."""

import re
import shutil
from pathlib import Path

import pytest
import torch

from bad_clips import broken_corpus, broken_rows, truncate, write_other_schema, write_rows
from cest.checkpoint import load_checkpoint, save_checkpoint
from cest.model import build_model
from cest.step import make_optimizer
from jobs import tracking
from jobs.data import to_batch, training_dataset
from jobs.train import latest_checkpoint, load_job_config, main
from small_model import SMALL_SETS

ROOT = Path(__file__).resolve().parents[1]
# 64 px, small networks, 2 clips a step: a step takes a fraction of a second on one core.
SMALL = ["--config", str(ROOT / "jobs/configs/cpu_demo.yaml"), *SMALL_SETS, "--set", "data.clips_per_batch=2",
         "--set", "train.holdout_clips=2", "--set", "train.log_every=2"]


@pytest.fixture(scope="module")
def ray_address():
    import ray

    # Two workers of half a CPU each leave Ray Data the rest (the job refuses a layout that leaves it none).
    context = ray.init(address="local", num_cpus=3, include_dashboard=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture
def store(tmp_path, mlflow_store):
    """The test's folder, holding its MLflow store (MLFLOW_TRACKING_URI) and the runs' storage."""
    return tmp_path


def _runs(store: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.slow
def test_batches_of_the_ingest_hold_whole_clips_of_distinct_frames(ray_address, sample_clips):
    data, rows = sample_clips
    dataset = training_dataset(str(data), frames=4, size=64, exclude=[rows[0]["segment_key"]], seed=0,
                                minimum_samples=0)
    keys = []
    for samples in dataset.iter_batches(batch_size=3, batch_format="numpy", drop_last=True):
        assert samples["images"].shape == (3, 4, 64, 64, 3)
        assert len(set(samples["sample_key"])) == 3
        for clip in samples["images"]:
            assert len({frame.tobytes() for frame in clip}) == 4
        keys += list(samples["sample_key"])
    # An epoch: every clip but the held-apart one, once (6 of 7 fit in whole batches of 3).
    assert len(keys) == 6 and len(set(keys)) == 6 and rows[0]["segment_key"] not in keys

    # Video scope: a sample is a source video (its segments grouped through Ray Data), 4 distinct frames.
    videos = training_dataset(str(data), frames=4, size=64, scope="video", seed=0, minimum_samples=0)
    drawn = []
    for samples in videos.iter_batches(batch_size=4, batch_format="numpy", drop_last=True):
        assert all(len({frame.tobytes() for frame in clip}) == 4 for clip in samples["images"])
        drawn += list(samples["sample_key"])
    assert sorted(drawn) == sorted({f"{row['speaker_id']}/{row['video_id']}" for row in rows})


@pytest.mark.slow
def test_two_workers_train_checkpoint_resume_and_track_one_mlflow_run(ray_address, sample_clips, store, capsys,
                                                                      monkeypatch):
    data, _ = sample_clips
    monkeypatch.chdir(data.parent)  # a relative --data, as `make train` gives, read by workers started elsewhere
    args = ["--data", data.name, *SMALL, "--workers", "2", "--cpus-per-worker", "0.5", "--name", "two",
            "--storage", str(store / "runs"), "--set", "train.checkpoint_every=4", "--set", "train.image_every=4"]
    assert main(args + ["--steps", "8"]) == 0
    directory, step = latest_checkpoint(str(store / "runs" / "two"))
    assert step == 8
    client, runs = _runs(store)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.variant"] == "cest" and run.data.params["data.clips_per_batch"] == "2"
    assert run.data.tags[tracking.VARIANT_TAG] == "cest" and run.data.tags[tracking.ABLATION_TAG] == "none"
    for name in ("train/photometric", "train/symmetry", "train/consistency", "train/landmark", "train/total",
                 "train/learning_rate", "train/learning_rate_appearance", "train/images_per_second",
                 "train/data_wait_share", "train/skipped_samples", "health/shading_std",
                 "health/texture_correlation"):
        assert name in run.data.metrics, name
    totals = [m.value for m in client.get_metric_history(run.info.run_id, "train/total")]
    assert len(totals) == 4 and totals[-1] < totals[0]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoint", "images"} <= artifacts
    checkpoint = load_checkpoint(client.download_artifacts(run.info.run_id, tracking.CHECKPOINT_ARTIFACT))
    assert checkpoint["step"] == 8 and checkpoint["mlflow_run_id"] == run.info.run_id
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("holdout+step+8+" in path for path in grids), grids

    # The same command with the same name resumes from the checkpoint into the same MLflow run.
    capsys.readouterr()
    assert main(args + ["--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "resuming two from step 8" in out
    _, runs = _runs(store)
    assert len(runs) == 1
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/total")][-1] == 10
    resumed = load_checkpoint(latest_checkpoint(str(store / "runs" / "two"))[0])
    assert resumed["step"] == 10
    # Training went on from step 8's weights, not from scratch: two Adam steps (lr 1e-3) move each weight by
    # at most about 2e-3 (BatchNorm running statistics are not weights).
    before = torch.load(Path(directory) / "checkpoint.pt", weights_only=True)["model"]
    moved = [float((resumed["model"][k] - before[k]).abs().max()) for k in before
             if before[k].is_floating_point() and "running_" not in k]
    assert 0 < max(moved) < 5e-3

    # A fresh start under a used name needs --fresh.
    assert main(args + ["--steps", "10"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # (--fresh acts before any worker starts: shown without a worker group, which costs a Ray Train start.)
    local = [("0" if previous == "--workers" else item) for previous, item in zip([None, *args], args)]
    assert main(local + ["--steps", "2", "--fresh"]) == 0
    assert latest_checkpoint(str(store / "runs" / "two"))[1] == 2
    _, runs = _runs(store)
    assert len(runs) == 2


@pytest.mark.slow
def test_a_worker_that_dies_restarts_the_group_from_the_last_checkpoint(ray_address, sample_clips, store, capsys):
    """Two workers through the end of a landmark warm-up, then a killed worker. The warm-up's steps leave the
    reflectance and light networks out of the graph; DDP is told so, or its second step would fail waiting for
    their gradients. (One run shows both: each Ray Train start costs 10-15 s.)"""
    data, _ = sample_clips
    args = ["--data", str(data), *SMALL, "--workers", "2", "--cpus-per-worker", "0.5", "--name", "killed",
            "--storage", str(store / "runs"), "--steps", "6", "--set", "train.checkpoint_every=2",
            "--set", "train.image_every=100", "--max-failures", "2", "--crash-once-at-step", "4",
            "--set", "loss.landmark_warmup_steps=2", "--set", "train.log_every=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"step 2/6 .* landmark \S+ regulariser \S+ total", out)
    assert "photometric" not in out.split("step 2/6")[1].split("\n")[0]
    assert re.search(r"step 3/6 .* photometric \S+", out)
    # Rank 1 exited hard at step 4 (os._exit, as a killed process), once; the group restarted from step 2.
    assert (store / "runs" / "killed" / "crash-drill-done").read_text() == "4"
    assert latest_checkpoint(str(store / "runs" / "killed"))[1] == 6
    client, runs = _runs(store)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/total")]
    assert steps[-1] == 6 and steps.count(4) == 2  # step 4 trained (and logged) before and after the restart


@pytest.mark.parametrize("argument, message", [
    (["--data", "/nonexistent"], "holds no clips/ directory"),
    (["--config", "/nonexistent.yaml"], "config file /nonexistent.yaml does not exist"),
    (["--set", "loss.symetry=false"], "unknown fields"),
    (["--set", "data.frames_per_clip=1"], "consistency needs data.frames_per_clip >= 2"),
    (["--storage", "relative/runs"], "absolute path or a URI"),
    (["--name", "a/b"], "--name"),
    (["--workers", "3"], "does not split over 3 workers"),
    (["--start-from", "/nonexistent"], "--start-from: no checkpoint at /nonexistent"),
])
def test_bad_arguments_fail_in_one_line_before_any_worker(sample_clips, store, capsys, argument, message):
    _assert_one_line_error(sample_clips, store, capsys, argument, message)


def test_workers_that_would_take_every_cpu_from_ray_data_are_refused(ray_address, sample_clips, store, capsys):
    # The module's Ray has 3 CPUs: 2 workers x 1.5 CPUs would leave Ray Data's decoding tasks none.
    _assert_one_line_error(sample_clips, store, capsys, ["--workers", "2", "--cpus-per-worker", "1.5"],
                           "leave Ray Data less than 1 of the cluster's 3 CPUs")


def _saved_start(store: Path, name: str, step: int, overrides: list[str]) -> Path:
    """A checkpoint at `step` of the tests' small job config with `overrides`, as a training run writes one."""
    config = load_job_config(str(ROOT / "jobs/configs/cpu_demo.yaml"),
                             [a for a in SMALL_SETS if a != "--set"] + overrides)
    torch.manual_seed(1234)  # not the job's train.seed: weights a run started from scratch would not have
    model = build_model(config.model)
    return save_checkpoint(store / name, model, config, step, make_optimizer(model, config.optim))


def test_a_start_from_another_model_fails_in_one_line_naming_the_difference(sample_clips, store, capsys):
    path = _saved_start(store, "iest", 2, ["model.variant=iest"])
    _assert_one_line_error(sample_clips, store, capsys, ["--start-from", str(path)],
                           "holds another model (model.variant: 'iest' there, 'cest' here)")


@pytest.mark.slow
def test_a_run_started_from_another_runs_checkpoint_goes_on_from_its_step(ray_address, sample_clips, store, capsys):
    """--start-from, as ablations that share a landmark warm-up use it: the new run starts at the checkpoint's
    step with its weights, under its own name, objective and MLflow run; the source is left as it was."""
    data, _ = sample_clips
    source = _saved_start(store, "warmup/checkpoint_00000002", 2, []).parent
    fork = ["--data", str(data), *SMALL, "--workers", "0", "--storage", str(store / "runs"), "--name", "fork",
            "--steps", "3", "--set", "loss.landmark_warmup_steps=2", "--set", "train.log_every=1",
            "--set", "loss.symmetry=false", "--start-from", str(store / "warmup")]
    assert main(fork) == 0
    assert "starting fork at step 2 from" in capsys.readouterr().out
    forked = load_checkpoint(latest_checkpoint(str(store / "runs" / "fork"))[0])
    assert forked["step"] == 3 and forked["config"].loss.symmetry is False
    # One Adam step (lr 1e-3) from the source's weights moves each weight by about 1e-3 at most.
    before = torch.load(source / "checkpoint.pt", weights_only=True)["model"]
    moved = [float((forked["model"][k] - before[k]).abs().max()) for k in before
             if before[k].is_floating_point() and "running_" not in k]
    assert 0 < max(moved) < 3e-3
    assert latest_checkpoint(str(store / "warmup"))[1] == 2
    client, runs = _runs(store)
    (fork_run,) = runs
    # Only the fork's own step was trained (and logged), with the full objective: the warm-up was not rerun.
    assert [m.step for m in client.get_metric_history(fork_run.info.run_id, "train/photometric")] == [3]
    assert fork_run.data.tags["cest.started_from"] == str(store / "warmup")
    # Once the fork has checkpoints of its own, its source is not needed again.
    shutil.rmtree(store / "warmup")
    assert main(fork) == 0
    assert "fork is already at step 3 of 3" in capsys.readouterr().out


RAY_FORWARDED_LOG = re.compile(r"^(\x1b\[[0-9;]*m)?\([^()]* pid=\d+[^()]*\)")


def _assert_one_line_error(sample_clips, store, capsys, argument, message):
    data, _ = sample_clips
    args = ["--data", str(data), *SMALL, "--name", "bad", "--storage", str(store / "runs")]
    for i in range(0, len(argument), 2):  # a later --data / --config / --name wins in argparse
        args += argument[i:i + 2]
    assert main(args) == 2
    # Lines that Ray forwards from the shared cluster's other processes ("(Name pid=N) ...", e.g. a
    # placement-group cleaner of an earlier test logging its own traceback) are not the job's output.
    own = [line for line in capsys.readouterr().err.splitlines() if not RAY_FORWARDED_LOG.match(line)]
    assert len(own) == 1 and message in own[0] and "Traceback" not in own[0]
    assert not (store / "runs").exists() and _runs(store)[1] == []


def test_a_small_corpus_gives_several_samples_per_clip_and_pass(sample_clips):
    from jobs.data import draws_per_clip, training_corpus

    data, rows = sample_clips
    corpus = training_corpus(str(data))
    assert draws_per_clip(corpus, minimum_samples=len(rows)) == 1
    assert draws_per_clip(corpus, minimum_samples=len(rows) + 1) == 2
    assert draws_per_clip(corpus, minimum_samples=10 * len(rows)) == 10
    assert draws_per_clip(corpus, minimum_samples=10_000) == 16  # bounded


@pytest.mark.slow
def test_single_images_train_in_this_process_without_consistency(ray_address, sample_clips, store, capsys):
    data, _ = sample_clips
    args = ["--data", str(data), *SMALL, "--workers", "0", "--name", "images", "--storage", str(store / "runs"),
            "--steps", "2", "--set", "data.frames_per_clip=1", "--set", "loss.consistency=false",
            "--set", "data.clips_per_batch=4"]
    assert main(args) == 0
    assert "rank 0: 1 worker(s), 4 images per step" in capsys.readouterr().out
    client, runs = _runs(store)
    assert "train/consistency" not in runs[0].data.metrics and "train/symmetry" in runs[0].data.metrics
    assert latest_checkpoint(str(store / "runs" / "images"))[1] == 2


@pytest.mark.slow
def test_held_apart_clips_never_reach_a_training_batch(ray_address, sample_clips, store, monkeypatch):
    """train.holdout_clips=2 holds apart the first two rows of the first clip file (sample_clips writes two rows a
    file): in one pass of the job's training batches every other clip is drawn its draws per pass, these two never."""
    from collections import Counter

    import jobs.train
    from jobs.data import draws_per_clip, training_corpus

    data, rows = sample_clips
    drawn = []

    def recording_to_batch(samples, device):
        drawn.extend(samples["sample_key"])
        return to_batch(samples, device)

    monkeypatch.setattr(jobs.train, "to_batch", recording_to_batch)
    held_apart = {row["segment_key"] for row in rows[:2]}
    draws = draws_per_clip(training_corpus(str(data)))
    steps = (len(rows) - len(held_apart)) * draws // 8  # one pass, 8 clips a batch
    args = ["--data", str(data), *SMALL, "--workers", "0", "--name", "held", "--storage", str(store / "runs"),
            "--steps", str(steps), "--set", "data.clips_per_batch=8", "--set", "data.frames_per_clip=2",
            "--set", "train.image_every=100", "--set", "train.checkpoint_every=100"]
    assert main(args) == 0
    assert not held_apart & set(drawn)
    assert Counter(drawn) == {row["segment_key"]: draws for row in rows[2:]}


@pytest.mark.slow
def test_two_sources_mix_by_weight_in_one_run(ray_address, sample_clips, store, tmp_path, capsys):
    """Real clips and a synthetic set in one run: both read, the run named by both in MLflow."""
    from jobs import synthetic

    data, _ = sample_clips
    assert synthetic.main(["--output", str(tmp_path / "synthetic"), "--clips", "4", "--frames", "4"]) == 0
    args = ["--data", f"{data}:0.5", "--data", f"{tmp_path / 'synthetic'}:0.5", *SMALL, "--workers", "0",
            "--name", "mixed", "--storage", str(store / "runs"), "--steps", "2", "--set", "data.clips_per_batch=4"]
    assert main(args) == 0
    client, runs = _runs(store)
    mixed = next(run for run in runs if run.info.run_name == "mixed")
    assert mixed.data.tags[tracking.DATASET_TAG] == f"{data.name}:0.5+synthetic:0.5"
    assert latest_checkpoint(str(store / "runs" / "mixed"))[1] == 2
    assert main(["--data", f"{data}:lots", *args[2:]]) == 2
    assert "the weight after the last ':' is not a number" in capsys.readouterr().err


def _skip_list(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "skipped.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_workers_train_through_bad_files_and_rows_naming_each_once(ray_address, sample_clips, store, tmp_path,
                                                                       capsys):
    """A truncated file, a file of another schema, a row group that does not read behind a good footer and rows
    that do not decode, hold NaN landmarks or too few frames: the run reaches its step count without a restart,
    each skip listed once over several passes."""
    data, rows = sample_clips
    expected = broken_corpus(tmp_path / "broken", data, rows)
    args = ["--data", str(tmp_path / "broken"), *SMALL, "--workers", "2", "--cpus-per-worker", "0.5",
            "--name", "bad-rows", "--storage", str(store / "runs"), "--steps", "8", "--max-failures", "0",
            "--set", "data.max_skipped_fraction=0.6", "--set", "train.image_every=100"]
    assert main(args) == 0
    assert latest_checkpoint(str(store / "runs" / "bad-rows"))[1] == 8
    listed = _skip_list(store / "runs" / "bad-rows")
    named = {f"{entry['file']}/{entry['segment_key']}".rstrip("/"): entry["reason"] for entry in listed}
    assert len(named) == len(listed) and set(named) == set(expected)
    assert all(expected[key] in named[key] for key in expected), named
    # 4 rows, the truncated file as 3 rows, 1 row of another schema, 1 of another type, the corrupt row group's 1 row
    skipped = sum(entry["samples"] for entry in listed)
    assert skipped == 10
    client, runs = _runs(store)
    history = client.get_metric_history(runs[0].info.run_id, "train/skipped_samples")
    assert history[-1].value == skipped and [m.step for m in history][-1] == 8
    out = capsys.readouterr().out
    assert f"skipped {skipped} unreadable samples" in out


@pytest.mark.slow
def test_too_many_bad_rows_stop_training_with_one_error_line(ray_address, sample_clips, store, tmp_path, capsys):
    """Four bad rows of 13 are far past the default bound (1%): the job stops at a progress check, exit 2."""
    data, rows = sample_clips
    broken = tmp_path / "broken"
    (broken / "clips").mkdir(parents=True)
    for file in sorted((data / "clips").glob("*.parquet")):
        (broken / "clips" / file.name).write_bytes(file.read_bytes())
    write_rows(broken / "clips" / "part-rows.parquet", [*broken_rows(rows[0]).values(), rows[1]])
    args = ["--data", str(broken), *SMALL, "--workers", "0", "--name", "too-bad", "--storage", str(store / "runs"),
            "--steps", "40", "--set", "train.image_every=100", "--set", "train.checkpoint_every=100"]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "above data.max_skipped_fraction 1.0%" in errors[0], errors
    assert latest_checkpoint(str(store / "runs" / "too-bad")) is None  # stopped long before step 40
    assert {entry["segment_key"] for entry in _skip_list(store / "runs" / "too-bad")} <= {
        row["segment_key"] for row in broken_rows(rows[0]).values()}
    _, runs = _runs(store)
    assert runs[0].info.status == "FAILED"


@pytest.mark.slow
def test_a_mixed_source_whose_every_row_is_bad_stops_training_with_one_error_line(ray_address, sample_clips, store,
                                                                                  tmp_path, capsys):
    """Two sources by weight, the second's footers fine but every row bad: its empty pass ends the batches and the
    job stops with the policy's verdict (its rows past the bound, 1%), one error line, exit status 2."""
    data, rows = sample_clips
    bad_rows = list(broken_rows(rows[0]).values())
    (tmp_path / "bad" / "clips").mkdir(parents=True)
    write_rows(tmp_path / "bad" / "clips" / "part-0.parquet", bad_rows)
    args = ["--data", f"{data}:0.5", "--data", f"{tmp_path / 'bad'}:0.5", *SMALL, "--workers", "0",
            "--name", "bad-source", "--storage", str(store / "runs"), "--steps", "6",
            "--set", "train.image_every=100", "--set", "train.checkpoint_every=100"]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert f"{len(bad_rows)} of {len(rows) + len(bad_rows)} samples could not be read" in errors[0], errors
    assert "above data.max_skipped_fraction 1.0%" in errors[0]
    assert latest_checkpoint(str(store / "runs" / "bad-source")) is None  # stopped before its 6 steps
    assert {entry["segment_key"] for entry in _skip_list(store / "runs" / "bad-source")} == {
        row["segment_key"] for row in bad_rows}
    _, runs = _runs(store)
    assert runs[0].info.status == "FAILED"


def test_a_directory_where_every_file_is_broken_is_one_error_line(sample_clips, store, tmp_path, capsys):
    data, _ = sample_clips
    (tmp_path / "broken" / "clips").mkdir(parents=True)
    truncate(sorted((data / "clips").glob("*.parquet"))[0], tmp_path / "broken" / "clips" / "part-0.parquet")
    write_other_schema(tmp_path / "broken" / "clips" / "part-1.parquet")
    assert main(["--data", str(tmp_path / "broken"), *SMALL, "--name", "bad", "--storage", str(store / "runs")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "none of its 2 clip files is readable" in err[0]
    assert not (store / "runs").exists() and _runs(store)[1] == []
