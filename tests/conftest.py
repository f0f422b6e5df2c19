import shutil

import pytest

from cest.assets import AssetUnavailable
from cest.morphable import load_sfm

# Third-party assets come through the registry (cest.assets, tests/sample_assets.py): from the mirror named by
# CEST_ASSETS_MIRROR (the Makefile sets it when a mirror sits beside the checkout), else downloaded from upstream.

# Real frames through the preprocessing pipeline, shared by the model tests (session fixture).
from sample_frames import sample_frames  # noqa: E402,F401
from sample_clips import sample_clips  # noqa: E402,F401


@pytest.fixture(scope="session")
def morphable():
    """The Surrey Face Model, loaded once (tests that move a model to another device load their own)."""
    return load_sfm()


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory):
    """An empty MLflow SQLite store with its tables made: MLflow's migrations take 4-16 s per new store on this
    machine, a copy of the file a few milliseconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, migrated_mlflow_db) -> str:
    """A store of the test's own at tmp_path/mlflow.db (a copy of the migrated empty one), as MLFLOW_TRACKING_URI
    for the jobs the test runs; returns its URI."""
    shutil.copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that needs an asset when no mirror is configured and upstream is unreachable is skipped, not
    failed. Any other asset error (a mirror that lacks a file, a wrong hash) still fails it."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(AssetUnavailable):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {call.excinfo.value}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same at collection: a test module that fetches an asset at import (module-level sample clips) is
    skipped with the reason when no mirror is configured and upstream is unreachable, not an error that stops
    the whole run."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call_raised(report, AssetUnavailable):
        report.outcome = "skipped"
        report.longrepr = (str(collector.path), 0, f"Skipped: {report.longrepr.reprcrash.message}")


def call_raised(report, error: type) -> bool:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash is not None and crash.message.startswith(f"{error.__module__}.{error.__name__}")

