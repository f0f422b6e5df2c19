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

