"""Two Ray nodes started as separate `ray start` processes (tests/ray_cluster.py): the project's preprocessing and
2-worker training jobs submitted with `ray job submit` run on both nodes, and stopping the cluster ends every
process it started."""

import sys
from pathlib import Path

import psutil
import pytest

from jobs.train import latest_checkpoint
from ray_cluster import RayCluster
from sample_assets import sample_clip
from small_model import SMALL_SETS


def node_with(nodes: list[dict], resource: str) -> str:
    (node,) = [node["NodeID"] for node in nodes if resource in node["Resources"]]
    return node


@pytest.mark.slow
def test_preprocessing_and_two_worker_training_submitted_to_two_nodes_run_on_both(sample_clips, tmp_path):
    """What a user does on a real cluster: `ray job submit` preprocessing, then training with 2 workers."""
    root = Path(__file__).resolve().parents[1]
    manifest = tmp_path / "videos.csv"
    manifest.write_text("path\n" + "".join(f"{sample_clip(c)}\n" for c in ("id10001/pcavs00015", "id10019/lpd0",
                                                                            "id10002/pcavs00086", "id10014/vretalk1")))
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    training_data, _ = sample_clips  # the training job reads the session's sample clips (8 real clips)
    with RayCluster() as cluster:
        cluster.start_head(num_cpus=2, resources={"head_node": 1})
        cluster.add_node(num_cpus=2, resources={"second_node": 1})
        head, second = (node_with(cluster.wait_for_nodes(2), name) for name in ("head_node", "second_node"))
        preprocess = cluster.submit(
            [sys.executable, "-m", "pipelines.preprocess", "--input", str(manifest), "--output",
             str(tmp_path / "clips"), "--max-frames", "12"], working_dir=root, runtime_env=runtime_env)
        assert preprocess.returncode == 0, preprocess.stdout[-3000:] + preprocess.stderr[-3000:]
        preprocess_nodes = set().union(*cluster.task_nodes().values())
        train = cluster.submit(
            [sys.executable, "jobs/train.py", "--data", str(training_data), "--config", "jobs/configs/cpu_demo.yaml",
             *SMALL_SETS, "--set", "data.clips_per_batch=2", "--set", "train.holdout_clips=1", "--steps", "2",
             "--workers", "2", "--cpus-per-worker", "1", "--placement-strategy", "SPREAD", "--name", "two-nodes",
             "--storage", str(tmp_path / "runs")], working_dir=root, runtime_env=runtime_env)
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
        worker_nodes = set().union(*(nodes for name, nodes in cluster.task_nodes().items()
                                     if name.startswith("RayTrainWorker")))
        started = [psutil.Process(pid) for pid in cluster.started_pids()]
        assert len(started) >= 6  # per node at least `ray start` and a raylet; GCS and dashboard on the head
    # Leaving the block stopped every process the cluster started, by PID, and removed its temp dir.
    assert [process.pid for process in started if process.is_running()] == []
    assert not cluster.temp_dir.exists()
    assert {head, second} <= preprocess_nodes
    assert worker_nodes == {head, second}
    assert "done: two-nodes at step 2" in train.stdout
    assert latest_checkpoint(str(tmp_path / "runs" / "two-nodes"))[1] == 2
    assert list((tmp_path / "clips" / "clips").glob("*.parquet"))
