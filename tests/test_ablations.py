"""jobs/ablations.py: the paper's variants as child runs of one MLflow parent run."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from cest.config import load_config
from jobs import tracking
from jobs.ablations import ablations, image_steps, main
from small_model import SMALL_SETS

ROOT = Path(__file__).resolve().parents[1]


def test_every_ablation_is_a_valid_config_and_clip_averages_keep_the_batch():
    variants = ablations(batch_size=32)
    assert {"cest", "iest", "symmetry_only", "consistency_only", "neither", "video_scope", "clip_average_2",
            "clip_average_4", "clip_average_8"} == set(variants)
    configs = {name: load_config(None, overrides) for name, overrides in variants.items()}
    # The paper's table (Sec. 4.2, Fig. 4, App. B.2): what each variant estimates and which terms it keeps.
    expected = {  # name: (variant, symmetry, consistency, consistency mode, consistency scope)
        "cest": ("cest", True, True, "pairing", "clip"),
        "iest": ("iest", True, True, "pairing", "clip"),
        "symmetry_only": ("cest", True, False, "pairing", "clip"),
        "consistency_only": ("cest", False, True, "pairing", "clip"),
        "neither": ("cest", False, False, "pairing", "clip"),
        "video_scope": ("cest", True, True, "pairing", "video"),
    }
    for name, settings in expected.items():
        config = configs[name]
        assert (config.model.variant, config.loss.symmetry, config.loss.consistency, config.loss.consistency_mode,
                config.data.consistency_scope) == settings, name
    for frames in (2, 4, 8):
        config = load_config(None, ["data.clips_per_batch=8"] + variants[f"clip_average_{frames}"])
        assert config.loss.consistency_mode == "clip_average" and config.data.batch_size == 32
    assert "clip_average_8" not in ablations(batch_size=12)


@pytest.mark.slow
def test_children_under_one_parent_run_and_a_rerun_resumes_them(sample_clips, tmp_path, mlflow_store, capsys):
    import ray
    from mlflow.tracking import MlflowClient

    data, _ = sample_clips
    args = ["--data", str(data), "--config", str(ROOT / "jobs/configs/cpu_demo.yaml"), "--only", "cest,neither",
            "--steps", "2", "--name", "sweep", "--storage", str(tmp_path / "runs"),
            *SMALL_SETS, "--set", "data.clips_per_batch=2", "--set", "train.holdout_clips=1"]
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        assert main(args) == 0
        assert main(args) == 0  # again: the parent and both children are reused, nothing is trained twice
    finally:
        ray.shutdown()
    assert capsys.readouterr().out.count("nothing to do") == 2
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == tracking.ABLATIONS_ROLE]
    children = {r.data.tags[tracking.ABLATION_TAG]: r for r in runs if r is not parent}
    assert set(children) == {"cest", "neither"} and len(runs) == 3
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    assert children["neither"].data.params["loss.symmetry"] == "False"
    assert "train/symmetry" not in children["neither"].data.metrics
    assert "train/symmetry" in children["cest"].data.metrics
    assert parent.info.status == "FINISHED"
    # The parent holds the comparison: each logged curve overlaid by variant, symmetry only where cest has it.
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison/train")}
    assert {"comparison/train/total.png", "comparison/train/photometric.png", "comparison/train/symmetry.png"} <= figures
    assert not client.list_artifacts(parent.info.run_id, "comparison/synthetic")  # no child scored a synthetic set
    # ... and the children's held-apart grids side by side at their last step, once although the sweep ran twice.
    side_by_side = image_steps(client, parent.info.run_id, "holdout_by_variant")
    assert list(side_by_side) == [2]
    widths = [Image.open(client.download_artifacts(children[name].info.run_id,
                                                   image_steps(client, children[name].info.run_id, "holdout")[2],
                                                   str(tmp_path / name))).width for name in ("cest", "neither")]
    combined = Image.open(client.download_artifacts(parent.info.run_id, side_by_side[2], str(tmp_path / "parent")))
    assert combined.width == sum(widths) + 2 * 8  # each grid with a 4-pixel margin either side


def test_parallel_starts_every_variants_driver_before_waiting_and_a_failed_one_fails_the_sweep(
        sample_clips, tmp_path, monkeypatch, mlflow_store, capsys):
    """--parallel: one jobs/train.py driver per variant, all started before any is waited on, each with its child
    run's name, ablation, parent run and overrides, and a share of the cores as its torch threads. The drivers are
    recorded, not run: two real ones each start a Ray and train, minutes on two cores (the sequential sweep's test
    trains for real)."""
    import jobs.ablations
    from mlflow.tracking import MlflowClient

    events = []
    threads = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(jobs.ablations.os, "cpu_count", lambda: 8)

    class RecordedDriver:
        def __init__(self, command, env):
            self.command = command
            threads.append(env["OMP_NUM_THREADS"])
            events.append(("start", command))

        def wait(self):
            events.append(("wait", self.command))
            return 1 if "sweep-neither" in self.command else 0

    monkeypatch.setattr(jobs.ablations, "subprocess", SimpleNamespace(Popen=RecordedDriver))
    args = ["--data", str(sample_clips[0]), "--only", "cest,neither", "--steps", "2", "--name", "sweep",
            "--storage", str(tmp_path / "runs"), "--parallel", "--set", "train.holdout_clips=1"]
    assert main(args) == 1
    assert "ablations sweep: failed: neither" in capsys.readouterr().out
    assert [event for event, _ in events] == ["start", "start", "wait", "wait"]
    assert threads == ["4", "4"]  # 8 cores, two drivers
    client = MlflowClient(mlflow_store)
    (parent,) = client.search_runs([client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id])
    assert parent.info.run_name == "sweep" and parent.info.status == "FAILED"
    commands = {command[command.index("--ablation") + 1]: command for _, command in events[:2]}
    for variant, command in commands.items():
        assert command[:2] == [sys.executable, str(ROOT / "jobs" / "train.py")]
        named = dict(zip(command[2::2], command[3::2]))  # every argument after the script is an --option value
        assert (named["--name"], named["--parent-run-id"], named["--steps"]) == (f"sweep-{variant}", parent.info.run_id, "2")
    settings = {variant: [value for option, value in zip(command[2:], command[3:]) if option == "--set"]
                for variant, command in commands.items()}
    assert settings == {variant: ["train.holdout_clips=1"] + ablations(32)[variant] for variant in ("cest", "neither")}


def test_side_by_side_drivers_keep_the_users_thread_setting_and_get_at_least_one(monkeypatch):
    import jobs.ablations

    monkeypatch.setattr(jobs.ablations.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert jobs.ablations.driver_environment(5)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert jobs.ablations.driver_environment(2)["OMP_NUM_THREADS"] == "3"


def test_unknown_ablations_and_missing_data_are_one_line(sample_clips, tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--only", "cest"]) == 2
    assert "holds no clips/ directory" in capsys.readouterr().err
    assert main(["--data", str(sample_clips[0]), "--only", "cest,everything"]) == 2
    assert "unknown ablations ['everything']" in capsys.readouterr().err
