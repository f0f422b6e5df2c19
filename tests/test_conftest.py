"""tests/conftest.py: without a mirror or network, what needs an asset is skipped with the reason, never an error."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_a_module_that_fetches_an_asset_at_import_is_skipped_not_an_error(tmp_path):
    shutil.copyfile(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_asset.py").write_text(
        "from cest.assets import AssetUnavailable\n"
        "raise AssetUnavailable('could not download asset x: no network')\n")
    (tmp_path / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 passed, 1 skipped" in done.stdout
    assert "test_needs_asset.py:0: cest.assets.AssetUnavailable: could not download asset x" in done.stdout
