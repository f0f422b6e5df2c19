"""Two Ray nodes started as separate `ray start` processes: a job submitted with `ray job submit` runs its tasks
on both (each node has a custom resource only it offers), and stopping the cluster ends every process it started;
the project's preprocessing and 2-worker training jobs submitted the same way run on both nodes."""

import json
import sys
from pathlib import Path

import psutil
import pytest

from jobs.train import latest_checkpoint
from ray_cluster import RayCluster
from sample_assets import sample_clip

JOB = """
import json, ray

ray.init()
where = lambda: ray.get_runtime_context().get_node_id()
on_head = ray.remote(num_cpus=1, resources={"head_node": 0.01})(where).options(name="on_head")
on_second = ray.remote(num_cpus=1, resources={"second_node": 0.01})(where).options(name="on_second")
print("RESULT " + json.dumps({
    "driver": where(),
    "head_tasks": sorted(set(ray.get([on_head.remote() for _ in range(4)]))),
    "second_tasks": sorted(set(ray.get([on_second.remote() for _ in range(4)]))),
}))
"""


@pytest.fixture
def two_nodes():
    """A head with 1 CPU and resource head_node, a second node with 1 CPU and resource second_node."""
    with RayCluster() as cluster:
        cluster.start_head(num_cpus=1, resources={"head_node": 1})
        cluster.add_node(num_cpus=1, resources={"second_node": 1})
        cluster.nodes = cluster.wait_for_nodes(2)
        yield cluster


def node_with(nodes: list[dict], resource: str) -> str:
    (node,) = [node["NodeID"] for node in nodes if resource in node["Resources"]]
    return node


@pytest.mark.slow
def test_submitted_job_runs_on_both_nodes_and_stop_ends_every_process(two_nodes, tmp_path):
    head, second = node_with(two_nodes.nodes, "head_node"), node_with(two_nodes.nodes, "second_node")
    assert head != second
    (tmp_path / "job.py").write_text(JOB)
    result = two_nodes.submit(["python", "job.py"], working_dir=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    ran = json.loads(line.removeprefix("RESULT "))
    assert ran == {"driver": head, "head_tasks": [head], "second_tasks": [second]}
    task_nodes = two_nodes.task_nodes()  # the same, from Ray's state API, as the lead's jobs will check it
    assert (task_nodes["on_head"], task_nodes["on_second"]) == ({head}, {second})

    started = [psutil.Process(pid) for pid in two_nodes.started_pids()]
    assert len(started) >= 6  # per node at least `ray start` and a raylet; GCS and dashboard on the head
    two_nodes.stop()
    assert [process.pid for process in started if process.is_running()] == []
    assert not two_nodes.temp_dir.exists()


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
             "--set", "model.encoder_widths=[8,16,16,32,32,32]", "--set", "model.unet_widths=[8,16,16,32,32]",
             "--set", "data.clips_per_batch=2", "--set", "train.holdout_clips=1", "--steps", "2",
             "--workers", "2", "--cpus-per-worker", "1", "--placement-strategy", "SPREAD", "--name", "two-nodes",
             "--storage", str(tmp_path / "runs")], working_dir=root, runtime_env=runtime_env)
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
        worker_nodes = set().union(*(nodes for name, nodes in cluster.task_nodes().items()
                                     if name.startswith("RayTrainWorker")))
    assert {head, second} <= preprocess_nodes
    assert worker_nodes == {head, second}
    assert "done: two-nodes at step 2" in train.stdout
    assert latest_checkpoint(str(tmp_path / "runs" / "two-nodes"))[1] == 2
    assert list((tmp_path / "clips" / "clips").glob("*.parquet"))
