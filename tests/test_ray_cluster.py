"""Two Ray nodes started as separate `ray start` processes (tests/ray_cluster.py): the project's 2-worker training
job submitted with `ray job submit` runs on both nodes, and stopping the cluster ends every process it started.
(Preprocessing on two nodes is tests/test_pipelines_cluster.py's.)"""

import sys
from pathlib import Path

import psutil
import pytest

from jobs.train import latest_checkpoint
from ray_cluster import RayCluster
from small_model import SMALL_SETS


def node_with(nodes: list[dict], resource: str) -> str:
    (node,) = [node["NodeID"] for node in nodes if resource in node["Resources"]]
    return node


@pytest.mark.slow
def test_two_worker_training_submitted_to_two_nodes_runs_on_both(sample_clips, tmp_path, mlflow_store):
    """What a user does on a real cluster: `ray job submit` training with 2 workers, one per node."""
    root = Path(__file__).resolve().parents[1]
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": mlflow_store}}
    training_data, _ = sample_clips  # the session's sample clips (8 real clips)
    with RayCluster() as cluster:
        cluster.start_head(num_cpus=2, resources={"head_node": 1})
        cluster.add_node(num_cpus=2, resources={"second_node": 1})
        head, second = (node_with(cluster.wait_for_nodes(2), name) for name in ("head_node", "second_node"))
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
    assert worker_nodes == {head, second}
    assert "done: two-nodes at step 2" in train.stdout
    assert latest_checkpoint(str(tmp_path / "runs" / "two-nodes"))[1] == 2
