"""A two-node Ray cluster on one machine writes the same clips as a single node."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.preprocess import run
from ray_cluster import free_port
from sample_assets import sample_clip, sample_clip_names

ROOT = Path(__file__).resolve().parents[1]
CLIPS = sample_clip_names()[::5]  # 6 clips of different speakers and sizes


def clip_rows(output: Path) -> dict[str, tuple]:
    table = pq.read_table([str(path) for path in (output / "clips").glob("part-*.parquet")])
    return {
        row["segment_key"]: (row["num_frames"], tuple(row["frame_indices"]))
        for row in table.select(["segment_key", "num_frames", "frame_indices"]).to_pylist()
    }


@pytest.mark.slow
def test_two_nodes_write_the_same_clips_as_one(tmp_path, monkeypatch):
    import time

    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_tasks

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the nodes' workers import this checkout's pipelines
    manifest = tmp_path / "videos.csv"
    manifest.write_text("path\n" + "".join(f"{sample_clip(clip)}\n" for clip in CLIPS))
    args = ["--input", str(manifest), "--max-frames", "12"]
    # The dashboard serves Ray's state API, which says where each task ran.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True,
                                                            "dashboard_port": free_port()})
    try:
        ray.init(address=cluster.address)
        head = cluster.head_node.node_id
        assert run(args + ["--output", str(tmp_path / "one")]) == 0
        second = cluster.add_node(num_cpus=1).node_id
        cluster.wait_for_nodes()
        assert len([node for node in ray.nodes() if node["Alive"]]) == 2
        started = time.time() * 1000
        assert run(args + ["--output", str(tmp_path / "two")]) == 0
        nodes = {task.node_id for task in list_tasks(detail=True, limit=10_000, raise_on_missing_output=False)
                 if task.type == "NORMAL_TASK" and (task.start_time_ms or 0) >= started}
    finally:
        ray.shutdown()
        cluster.shutdown()
    one, two = clip_rows(tmp_path / "one"), clip_rows(tmp_path / "two")
    assert len(one) == len(CLIPS)
    assert one == two
    assert nodes == {head, second}  # the second run's tasks ran on both nodes


# A head node as `ray start --head` makes one (a later plain ray.init() on the machine would join it);
# it stops when its standard input closes.
OTHER_CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
print("up", flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def test_the_embedded_ray_never_joins_another_cluster_on_the_machine(tmp_path):
    """Another job's Ray runs on this machine. Without --address the job starts a Ray of its own
    (before: ray.init joined the other cluster, and with --num-cpus it failed to start at all)."""
    import os
    import subprocess
    import sys

    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_CLUSTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "up"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("RAY_ADDRESS", None)
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.preprocess", "--input", str(sample_clip(CLIPS[0])), "--output", str(tmp_path / "out"), "--max-frames", "8", "--num-cpus", "1"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        other.stdin.close()
        other.wait(timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 inputs = 1 accepted" in result.stdout
