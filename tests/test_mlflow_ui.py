"""The MLflow UI on the project's store: experiments open as model development, on runs and charts (issue 19).

MLflow 3.17 reads the GenAI / model-training switch from the page's URL (else it opens on GenAI), so
`make mlflow-ui` prints the page with it (`jobs.tracking.runs_view_url`); the experiment tag is set too.
The browser check starts `mlflow ui` on a free local port over a store this test writes and loads the page
`make mlflow-ui` prints in headless Chromium (Debian's `chromium`; skipped where none is installed)."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from jobs import tracking


@pytest.fixture
def store(tmp_path):
    """A store with the CEST and IEST runs of one experiment, each with a learning curve."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = tracking.experiment_id(client, uri, "cest")
    for variant, start in (("cest", 0.9), ("iest", 1.1)):
        run = client.create_run(experiment, run_name=f"demo-{variant}", tags={tracking.VARIANT_TAG: variant})
        for step in range(1, 4):
            client.log_metric(run.info.run_id, "train/total", start / step, step=step)
        client.set_terminated(run.info.run_id)
    return uri, client, experiment


def test_experiments_are_created_and_marked_as_model_development(store, tmp_path):
    uri, client, experiment = store
    assert client.get_experiment(experiment).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_DEVELOPMENT
    older = client.create_experiment("made-before-the-tag")  # a store written by an earlier version
    assert tracking.experiment_id(client, uri, "made-before-the-tag") == older
    assert client.get_experiment(older).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_DEVELOPMENT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium browser installed (apt install chromium)")
def test_the_printed_page_shows_both_runs_as_model_training_in_a_browser(store, tmp_path):
    uri, _, experiment = store
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow ui did not start"
                time.sleep(1)
        page = tracking.runs_view_url(f"http://127.0.0.1:{port}", experiment)
        dom = subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom",
                              page], capture_output=True, text=True, timeout=180).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "demo-cest" in dom and "demo-iest" in dom  # the runs, not the GenAI overview's traces
    # The model-training side bar (the GenAI one lists judges, prompts and traces instead of the registry).
    assert "Model registry" in dom and "Judges" not in dom and "Detect Issues" not in dom
    assert "total" in dom  # the learning curve's chart
