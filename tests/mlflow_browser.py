"""The MLflow UI in a real browser: `mlflow ui` on a free local port over a store, pages loaded by headless
Chromium (Debian's `chromium`) as DOM text or as a screenshot. Used by tests/test_mlflow_ui.py and
docs/make_screenshots.py."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ray_cluster import free_port

BROWSER = shutil.which("chromium")
# Virtual time the page may take to fetch runs and draw its charts before the DOM or screenshot is taken.
RENDER_MILLISECONDS = 40000


@contextlib.contextmanager
def mlflow_ui(uri: str, startup_seconds: float = 300):
    """`mlflow ui` over the store at `uri` on 127.0.0.1 (one worker); yields its address. On exit the server and
    the processes it started (workers, job runner) are stopped: it runs in a session of its own."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow ui did not start") from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def load_page(url: str, profile: Path, screenshot: Path | None = None, size: tuple[int, int] = (1400, 1000)) -> str:
    """The page's DOM after RENDER_MILLISECONDS of virtual time; with `screenshot`, also a PNG of the window.
    `profile`: a fresh browser profile directory (no saved MLflow UI state)."""
    options = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
               f"--user-data-dir={profile}", f"--virtual-time-budget={RENDER_MILLISECONDS}"]
    if screenshot is not None:
        subprocess.run([BROWSER, *options, f"--screenshot={screenshot}", url], capture_output=True, timeout=180,
                       check=True)
    return subprocess.run([BROWSER, *options, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
