"""Two Ray nodes started as separate `ray start` processes: a job submitted with `ray job submit` runs its tasks
on both (each node has a custom resource only it offers), and stopping the cluster ends every process it started."""

import json

import psutil
import pytest

from ray_cluster import RayCluster

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
