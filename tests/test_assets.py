import dataclasses
import functools
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from cest import assets

SMALL = "morphable/sfm/ibug_to_sfm.txt"
ZIPPED = "voxceleb_sample/id10001/pcavs00015/00001.mp4"


def shared_mirror() -> Path:
    root = Path(os.environ.get(assets.MIRROR_ENV) or Path(__file__).resolve().parents[1].parent / "shared" / "assets")
    assert (root / "SHA256SUMS").is_file(), f"asset mirror not found at {root}; set {assets.MIRROR_ENV}"
    return root


@pytest.fixture
def mirror(monkeypatch):
    root = shared_mirror()
    monkeypatch.setenv(assets.MIRROR_ENV, str(root))
    return root


@pytest.fixture
def no_mirror(monkeypatch, tmp_path):
    monkeypatch.delenv(assets.MIRROR_ENV, raising=False)
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def http_server():
    """A local HTTP server over the shared mirror: the real pooch download path without the internet."""
    handler = functools.partial(QuietHandler, directory=str(shared_mirror()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_registry_matches_the_mirror_checksums():
    listed = {}
    for line in (shared_mirror() / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name.removeprefix("./")] = digest
    assert {name: asset.sha256 for name, asset in assets.REGISTRY.items()} == listed


def test_registry_urls_name_upstream_commits():
    for asset in assets.REGISTRY.values():
        urls = [asset.url] if asset.url else list(asset.archive_urls)
        assert urls, asset.name
        for url in urls:
            assert url.startswith("https://raw.githubusercontent.com/"), url
    assert assets.REGISTRY["morphable/sfm/sfm_shape_3448.bin"].url == (
        "https://raw.githubusercontent.com/patrikhuber/eos/ce984207a51c2edd2e7568a64fec9b98ef61aeed/share/sfm_shape_3448.bin"
    )


def test_fetch_from_mirror_checks_every_file(mirror):
    for name in assets.REGISTRY:
        path = assets.fetch(name)
        assert path == mirror / name
        assert assets.sha256_of(path) == assets.REGISTRY[name].sha256


def test_fetch_dir_returns_the_directory(mirror):
    directory = assets.fetch_dir("voxceleb_sample")
    assert directory == mirror / "voxceleb_sample"
    assert len(list(directory.glob("*/*/*.mp4"))) == len(assets.names_under("voxceleb_sample")) == 28
    assert assets.fetch_dir("morphable/sfm/") == mirror / "morphable" / "sfm"
    with pytest.raises(assets.AssetError, match="no registered assets"):
        assets.fetch_dir("nothing_here")


def test_corrupt_mirror_file_is_refused(monkeypatch, tmp_path):
    copy = tmp_path / SMALL
    copy.parent.mkdir(parents=True)
    shutil.copyfile(shared_mirror() / SMALL, copy)
    with open(copy, "ab") as stream:
        stream.write(b"# one more line\n")
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path))
    with pytest.raises(assets.AssetError, match="has SHA256 .* expected .*corrupt"):
        assets.fetch(SMALL)


def test_file_missing_from_mirror_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path))
    with pytest.raises(assets.AssetError, match="missing from the mirror"):
        assets.fetch(SMALL)


def test_mirror_must_be_a_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path / "absent"))
    with pytest.raises(assets.AssetError, match="not a directory"):
        assets.fetch(SMALL)


def test_unknown_asset_name(mirror):
    with pytest.raises(assets.AssetError, match="unknown asset"):
        assets.fetch("morphable/sfm/not_a_file.bin")


def with_url(monkeypatch, name: str, url: str) -> None:
    monkeypatch.setitem(assets.REGISTRY, name, dataclasses.replace(assets.REGISTRY[name], url=url))


def test_download_into_cache_and_reuse(monkeypatch, no_mirror, http_server):
    port = http_server.server_address[1]
    with_url(monkeypatch, SMALL, f"http://127.0.0.1:{port}/{SMALL}")
    path = assets.fetch(SMALL)
    assert path == no_mirror / SMALL
    assert path.read_bytes() == (shared_mirror() / SMALL).read_bytes()
    http_server.shutdown()  # a second fetch must come from the cache
    assert assets.fetch(SMALL) == path


def test_download_with_wrong_hash_is_refused(monkeypatch, no_mirror, http_server):
    port = http_server.server_address[1]
    # Serve a different registered file under this name: its bytes do not match the registered hash.
    with_url(monkeypatch, SMALL, f"http://127.0.0.1:{port}/morphable/sfm/readme.txt")
    with pytest.raises(assets.AssetError, match="could not download .*SHA256"):
        assets.fetch(SMALL)
    assert not (no_mirror / SMALL).exists()


def test_download_failure_without_mirror_is_a_clear_error(monkeypatch, no_mirror):
    with socket.socket() as probe:  # a local port with nothing listening: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with_url(monkeypatch, SMALL, f"http://127.0.0.1:{port}/{SMALL}")
    with pytest.raises(assets.AssetError, match=f"could not download .*{assets.MIRROR_ENV}"):
        assets.fetch(SMALL)


def test_archive_only_asset_needs_a_mirror(no_mirror):
    with pytest.raises(assets.AssetError, match="upstream archive.*Input.zip.*only available from a local mirror"):
        assets.fetch(ZIPPED)


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(assets.CACHE_ENV, raising=False)
    assert assets.cache_dir().name == "cest"
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    assert assets.cache_dir() == tmp_path
