"""A multi-node Ray cluster on one machine, started the way real nodes start: `ray start` processes.

`RayCluster` starts a head (`ray start --head --block`) and worker nodes (`ray start --address ... --block`),
each a separate process tree with its own CPUs, GPUs and custom resources, on ports of its own (other Ray
clusters may run on the machine at the same time) and a short temp dir of its own (Unix socket paths are
limited to 107 bytes). Token authentication is on, with a token of this cluster's own passed in the
environment (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN): Ray 2.60 turns it on by itself once ~/.ray/auth_token
exists, so a test that left it to chance would depend on what ran before. Jobs go through `ray job submit`
against the head's dashboard, as on a real cluster.

`stop()` ends every process the cluster started, by PID: the `ray start` processes and all their
descendants (GCS, raylets, dashboard, agents, workers, job drivers), SIGTERM first, SIGKILL for what is left.
It never calls `ray stop`, which would stop every Ray cluster of the user on the machine.

    with RayCluster() as cluster:
        cluster.start_head(num_cpus=1, resources={"head": 1})
        cluster.add_node(num_cpus=2, resources={"second": 1})
        cluster.wait_for_nodes(2)
        result = cluster.submit(["python", "job.py"], working_dir=directory)
        assert result.returncode == 0, result.stdout
        cluster.task_nodes()    # {task name: IDs of the nodes its tasks ran on}
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
STARTED = "Ray runtime started."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Ray's processes open many)."""
    try:
        low, high = (int(value) for value in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


WORKER_PORTS_FROM = 20000
WORKER_PORTS_PER_NODE = 128  # above Ray's default worker ports (10002-19999), which other local Rays use


def free_port_range(size: int, taken: list[tuple[int, int]] = ()) -> tuple[int, int]:
    """`size` consecutive ports that are free now (for a node's worker processes), below the ephemeral
    range, so that no outgoing connection of any process can take one of them later, and outside `taken`."""
    below = ephemeral_ports()[0]
    if below - size <= WORKER_PORTS_FROM:
        below = 65535  # no room below the ephemeral range: take any
    for _ in range(100):
        start = secrets.randbelow(below - size - WORKER_PORTS_FROM) + WORKER_PORTS_FROM
        if any(start <= high and low < start + size for low, high in taken):
            continue
        probes = []
        try:
            for port in range(start, start + size):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return start, start + size - 1
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {size} consecutive free ports")


class RayCluster:
    def __init__(self, start_timeout_s: float = 180.0):
        self.start_timeout_s = start_timeout_s
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.worker_port_ranges: list[tuple[int, int]] = []
        self.env = dict(
            os.environ,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_USAGE_STATS_ENABLED="0",
            # `python` in a job's entrypoint is this interpreter, as on a node whose environment is activated.
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        )
        for inherited in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(inherited, None)
        self.processes: list[subprocess.Popen] = []
        self.gcs_address: str | None = None
        self.dashboard_url: str | None = None

    # Nodes -----------------------------------------------------------------------------------------------
    def start_head(self, num_cpus: int, num_gpus: int = 0, resources: dict[str, float] | None = None) -> None:
        def head_options():
            gcs_port, dashboard_port = free_port(), free_port()
            self.gcs_address = f"127.0.0.1:{gcs_port}"
            self.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
            return ["--head", f"--port={gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
                    f"--temp-dir={self.temp_dir}"]

        self._start_node(head_options, num_cpus, num_gpus, resources)

    def add_node(self, num_cpus: int, num_gpus: int = 0, resources: dict[str, float] | None = None) -> None:
        if self.gcs_address is None:
            raise RuntimeError("start_head() first")
        # A temp dir per node, as each machine has its own disk: every node's runtime-env agent unpacks a job's
        # working_dir afresh (deleting what is there), which under a shared one removes the running driver's cwd.
        node_dir = self.temp_dir / f"node{len(self.processes)}"
        self._start_node(lambda: [f"--address={self.gcs_address}", f"--temp-dir={node_dir}"], num_cpus, num_gpus,
                         resources)

    def _start_node(self, role_options, num_cpus: int, num_gpus: int, resources, attempts: int = 3) -> None:
        """`ray start --block` with fresh free ports, again when a port was taken in between (it then exits)."""
        for attempt in range(attempts):
            process = self._launch(role_options(), num_cpus, num_gpus, resources)
            deadline = time.monotonic() + self.start_timeout_s
            while STARTED not in Path(process.log.name).read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            else:
                return
            output = Path(process.log.name).read_text()[-3000:]
            self._stop_processes([process])
        raise RuntimeError(f"`ray start` did not start a node in {attempts} attempts; last output:\n{output}")

    def _launch(self, role: list[str], num_cpus: int, num_gpus: int, resources) -> subprocess.Popen:
        # Ray Data's Parquet reads start 32 footer-reader actors, spread over the nodes, beside Train's and
        # Data's own actors and the job supervisors: 24 ports per node ran out and the job hung.
        low, high = free_port_range(WORKER_PORTS_PER_NODE, self.worker_port_ranges)
        self.worker_port_ranges.append((low, high))
        command = [
            RAY, "start", "--block", *role, f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
            f"--resources={json.dumps(resources or {})}", "--node-ip-address=127.0.0.1",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--min-worker-port={low}", f"--max-worker-port={high}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            "--object-store-memory=100000000", "--disable-usage-stats",
        ]
        log = open(self.temp_dir / f"node{len(self.processes)}.log", "w+")
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process.log = log
        self.processes.append(process)
        return process

    def wait_for_nodes(self, count: int, timeout_s: float = 120.0) -> list[dict]:
        """Wait until `count` nodes are alive; return them as `ray.nodes()` describes them."""
        probe = (
            "import json, time, ray\n"
            f"ray.init(address={self.gcs_address!r}, logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {timeout_s}\n"
            f"while len([n for n in ray.nodes() if n['Alive']]) < {count} and time.monotonic() < deadline:\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))\n"
        )
        result = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True,
                                timeout=timeout_s + 60)
        if result.returncode != 0:
            raise RuntimeError(f"could not list the nodes:\n{result.stderr[-3000:]}")
        nodes = json.loads(result.stdout.strip().splitlines()[-1])
        if len(nodes) < count:
            raise RuntimeError(f"{len(nodes)} of {count} nodes alive after {timeout_s} s")
        return nodes

    # Jobs ------------------------------------------------------------------------------------------------
    def submit(self, entrypoint: list[str], working_dir: Path | None = None, runtime_env: dict | None = None,
               timeout_s: float = 600.0) -> subprocess.CompletedProcess:
        """`ray job submit` and wait: the job's log is in stdout; returncode is 0 when the job succeeded."""
        command = [RAY, "job", "submit", f"--address={self.dashboard_url}"]
        if working_dir is not None:
            command.append(f"--working-dir={working_dir}")
        if runtime_env:
            command.append(f"--runtime-env-json={json.dumps(runtime_env)}")
        return subprocess.run(command + ["--", *entrypoint], env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)

    def task_nodes(self) -> dict[str, set[str]]:
        """For each task name of every job so far, the IDs of the nodes its tasks ran on (Ray's state API)."""
        command = [RAY, "list", "tasks", f"--address={self.dashboard_url}", "--format=json", "--detail",
                   "--limit=10000", "--timeout=120"]  # the API server's maximum
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"`ray list tasks` failed:\n{result.stderr[-3000:]}")
        nodes: dict[str, set[str]] = {}
        for task in json.loads(result.stdout):
            if task.get("node_id"):
                nodes.setdefault(task["name"], set()).add(task["node_id"])
        return nodes

    # Teardown --------------------------------------------------------------------------------------------
    def started_pids(self, processes: list[subprocess.Popen] | None = None) -> list[int]:
        """PIDs of every live process this cluster started: the `ray start` processes and their descendants."""
        pids = []
        for process in self.processes if processes is None else processes:
            try:
                root = psutil.Process(process.pid)
                pids += [root.pid] + [child.pid for child in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return pids

    def stop(self, grace_s: float = 5.0) -> None:
        """End every process the cluster started and remove its temp dir."""
        self._stop_processes(list(self.processes), grace_s)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _stop_processes(self, processes: list[subprocess.Popen], grace_s: float = 5.0) -> None:
        victims = []
        for pid in self.started_pids(processes):
            try:
                victims.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        for victim in reversed(victims):  # descendants first, the `ray start` processes last
            try:
                victim.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(victims, timeout=grace_s)
        for victim in alive:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for process in processes:
            process.wait(timeout=10)
            process.log.close()
            self.processes.remove(process)

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
