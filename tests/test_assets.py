import dataclasses
import functools
import hashlib
import http.server
import shutil
import socket
import threading
import zipfile

import pytest

from cest import assets
from sample_assets import asset

SMALL = "morphable/sfm/ibug_to_sfm.txt"
ARCHIVE = "archives/pcavs/Input.zip"
ZIPPED = "voxceleb_sample/id10007/pcavs00010/00001.mp4"  # Input/00010.mp4 in ARCHIVE
ZIPPED_TOO = "voxceleb_sample/id10008/pcavs00098/00001.mp4"  # Input/00098.mp4 in ARCHIVE


@pytest.fixture
def mirror():
    root = assets.mirror_root()
    if root is None:
        pytest.skip(f"no asset mirror configured ({assets.MIRROR_ENV})")
    return root


@pytest.fixture
def upstream(tmp_path):
    """A directory laid out like upstream, holding registry copies of the files the download tests serve."""
    root = tmp_path / "upstream"
    for name in (SMALL, "morphable/sfm/readme.txt", ARCHIVE):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(asset(name), root / name)
    return root


@pytest.fixture
def no_mirror(monkeypatch, tmp_path, upstream):
    monkeypatch.delenv(assets.MIRROR_ENV, raising=False)
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def http_server(upstream):
    """A local HTTP server over `upstream`: the real pooch download path without the internet."""
    handler = functools.partial(QuietHandler, directory=str(upstream))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def served_url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{path}"


def test_registry_matches_the_mirror_checksums(mirror):
    listed = {}
    for line in (mirror / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name.removeprefix("./")] = digest
    mirrored = {name: entry.sha256 for name, entry in assets.REGISTRY.items() if entry.mirrored}
    assert {name: digest for name, digest in listed.items() if name in mirrored} == mirrored
    assert all(assets.REGISTRY[name].sha256 == digest for name, digest in listed.items() if name not in mirrored)


def test_every_asset_has_an_upstream_source():
    for entry in assets.REGISTRY.values():
        if entry.url is None:  # an archive member: the archive is registered with a URL of its own
            assert entry.member, entry.name
            assert assets.REGISTRY[entry.archive].url is not None, entry.name
        else:
            assert entry.archive is None and entry.member is None, entry.name
            pypi_wheel = entry.url.startswith("https://files.pythonhosted.org/") and entry.url.endswith(".whl")
            assert entry.url.startswith("https://raw.githubusercontent.com/") or pypi_wheel, entry.url
    assert assets.REGISTRY["morphable/sfm/sfm_shape_3448.bin"].url == (
        "https://raw.githubusercontent.com/patrikhuber/eos/ce984207a51c2edd2e7568a64fec9b98ef61aeed/share/sfm_shape_3448.bin"
    )
    assert assets.REGISTRY["kuberay/ray.io_rayjobs.yaml"].url == (
        "https://raw.githubusercontent.com/ray-project/kuberay/59d663aeec13760646da3db9c1cf8cfe883e30b7/"
        "ray-operator/config/crd/bases/ray.io_rayjobs.yaml"
    )
    zipped = [entry for entry in assets.REGISTRY.values() if entry.archive]
    assert len(zipped) == 16 and {entry.archive for entry in zipped} == {
        "archives/pcavs/Audio_Source.zip", "archives/pcavs/Input.zip", "archives/pcavs/Pose_Source.zip",
        "archives/mediapipe/mediapipe-0.10.21-cp312-cp312-manylinux_2_28_x86_64.whl",
    }


def test_every_archive_member_is_in_its_archive_with_the_registered_hash():
    """Reference check with zipfile alone: each registered member's bytes hash to the registered SHA256."""
    for entry in assets.REGISTRY.values():
        if entry.archive:
            with zipfile.ZipFile(asset(entry.archive)) as archive:
                assert hashlib.sha256(archive.read(entry.member)).hexdigest() == entry.sha256, entry.name


def test_fetch_from_mirror_checks_every_file(mirror):
    for name in [name for name, entry in assets.REGISTRY.items() if entry.mirrored]:
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


def test_command_line_prints_the_directory(mirror, capsys):
    assert assets.main(["dir", "morphable/sfm"]) == 0
    assert capsys.readouterr().out.strip() == str(mirror / "morphable" / "sfm")
    assert assets.main(["dir", "nothing_here"]) == 1
    assert capsys.readouterr().err.strip() == "error: no registered assets under 'nothing_here'"


def test_corrupt_mirror_file_is_refused(monkeypatch, tmp_path):
    copy = tmp_path / SMALL
    copy.parent.mkdir(parents=True)
    shutil.copyfile(asset(SMALL), copy)
    with open(copy, "ab") as stream:
        stream.write(b"# one more line\n")
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path))
    with pytest.raises(assets.AssetError, match="has SHA256 .* expected .*corrupt"):
        assets.fetch(SMALL)


def test_file_missing_from_mirror_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path))
    with pytest.raises(assets.AssetError, match="missing from the mirror") as error:
        assets.fetch(SMALL)
    assert not isinstance(error.value, assets.AssetUnavailable)  # a broken mirror fails tests, never skips them


def test_mirror_must_be_a_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path / "absent"))
    with pytest.raises(assets.AssetError, match="not a directory"):
        assets.fetch(SMALL)


def test_unknown_asset_name():
    with pytest.raises(assets.AssetError, match="unknown asset"):
        assets.fetch("morphable/sfm/not_a_file.bin")


def with_fields(monkeypatch, name: str, **fields) -> None:
    monkeypatch.setitem(assets.REGISTRY, name, dataclasses.replace(assets.REGISTRY[name], **fields))


def test_download_into_cache_and_reuse(monkeypatch, no_mirror, upstream, http_server):
    with_fields(monkeypatch, SMALL, url=served_url(http_server, SMALL))
    path = assets.fetch(SMALL)
    assert path == no_mirror / SMALL
    assert path.read_bytes() == (upstream / SMALL).read_bytes()
    http_server.shutdown()  # a second fetch must come from the cache
    assert assets.fetch(SMALL) == path


def test_download_with_wrong_hash_is_refused(monkeypatch, no_mirror, http_server):
    # Serve a different registered file under this name: its bytes do not match the registered hash.
    with_fields(monkeypatch, SMALL, url=served_url(http_server, "morphable/sfm/readme.txt"))
    with pytest.raises(assets.AssetError, match="could not download .*SHA256") as error:
        assets.fetch(SMALL)
    assert not isinstance(error.value, assets.AssetUnavailable)
    assert not (no_mirror / SMALL).exists()


def refused_url(path: str) -> str:
    with socket.socket() as probe:  # a local port with nothing listening: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def test_download_failure_without_mirror_is_a_clear_error(monkeypatch, no_mirror):
    with_fields(monkeypatch, SMALL, url=refused_url(SMALL))
    with pytest.raises(assets.AssetUnavailable, match=f"could not download .*{assets.MIRROR_ENV}"):
        assets.fetch(SMALL)


def test_archive_member_is_downloaded_extracted_and_checked(monkeypatch, no_mirror, http_server):
    with_fields(monkeypatch, ARCHIVE, url=served_url(http_server, ARCHIVE))
    path = assets.fetch(ZIPPED)
    assert path == no_mirror / ZIPPED
    assert assets.sha256_of(path) == assets.REGISTRY[ZIPPED].sha256
    assert assets.sha256_of(no_mirror / ARCHIVE) == assets.REGISTRY[ARCHIVE].sha256
    http_server.shutdown()  # from here on, everything comes from the downloaded archive or the cache
    assert assets.fetch(ZIPPED) == path
    other = assets.fetch(ZIPPED_TOO)
    assert other == no_mirror / ZIPPED_TOO
    assert assets.sha256_of(other) == assets.REGISTRY[ZIPPED_TOO].sha256


def test_every_sample_clip_downloads_or_extracts_into_the_cache(monkeypatch, tmp_path):
    """The whole sample without a mirror: 14 clips downloaded, 14 extracted from their 3 archives, all checked."""
    served = tmp_path / "served"
    sources = [entry for entry in assets.REGISTRY.values() if entry.url and entry.name.startswith(("voxceleb_sample/", "archives/"))]
    for entry in sources:
        (served / entry.name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(asset(entry.name), served / entry.name)
    monkeypatch.delenv(assets.MIRROR_ENV, raising=False)
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for entry in sources:
            with_fields(monkeypatch, entry.name, url=served_url(server, entry.name))
        directory = assets.fetch_dir("voxceleb_sample")
    finally:
        server.shutdown()
        server.server_close()
    assert directory == tmp_path / "cache" / "voxceleb_sample"
    clips = sorted(directory.glob("*/*/00001.mp4"))
    assert [str(clip.relative_to(directory.parent)) for clip in clips] == assets.names_under("voxceleb_sample")
    assert all(assets.sha256_of(clip) == assets.REGISTRY[f"voxceleb_sample/{clip.relative_to(directory)}"].sha256 for clip in clips)


def test_archive_member_with_wrong_hash_is_refused(monkeypatch, no_mirror, http_server):
    with_fields(monkeypatch, ARCHIVE, url=served_url(http_server, ARCHIVE))
    with_fields(monkeypatch, ZIPPED, sha256=assets.REGISTRY[ZIPPED_TOO].sha256)
    with pytest.raises(assets.AssetError, match="Input/00010.mp4 in .* has SHA256 .* expected"):
        assets.fetch(ZIPPED)
    assert not (no_mirror / ZIPPED).exists()


def test_archive_without_the_member_is_an_error(monkeypatch, no_mirror, http_server):
    with_fields(monkeypatch, ARCHIVE, url=served_url(http_server, ARCHIVE))
    with_fields(monkeypatch, ZIPPED, member="Input/99999.mp4")
    with pytest.raises(assets.AssetError, match="has no member 'Input/99999.mp4'"):
        assets.fetch(ZIPPED)


def test_archive_download_failure_is_a_clear_error(monkeypatch, no_mirror):
    with_fields(monkeypatch, ARCHIVE, url=refused_url(ARCHIVE))
    with pytest.raises(assets.AssetUnavailable, match=f"could not download asset '{ARCHIVE}'.*{assets.MIRROR_ENV}"):
        assets.fetch(ZIPPED)


def test_file_a_mirror_may_lack_is_downloaded_into_the_cache(monkeypatch, tmp_path, http_server):
    """An asset registered with mirrored=False (the mediapipe wheel's models) that the configured mirror lacks
    comes from upstream into the cache; one the mirror holds is read from there."""
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path / "mirror"))
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    with_fields(monkeypatch, ARCHIVE, url=served_url(http_server, ARCHIVE), mirrored=False)
    with_fields(monkeypatch, ZIPPED, mirrored=False)
    assert assets.fetch(ZIPPED) == tmp_path / "cache" / ZIPPED
    (tmp_path / "mirror" / ZIPPED).parent.mkdir(parents=True)
    shutil.copyfile(asset(ZIPPED), tmp_path / "mirror" / ZIPPED)
    assert assets.fetch(ZIPPED) == tmp_path / "mirror" / ZIPPED


def test_unreachable_member_a_mirror_may_lack_names_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.MIRROR_ENV, str(tmp_path))
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    with_fields(monkeypatch, ARCHIVE, url=refused_url(ARCHIVE), mirrored=False)
    with_fields(monkeypatch, ZIPPED, mirrored=False)
    with pytest.raises(assets.AssetUnavailable) as error:
        assets.fetch(ZIPPED)
    message = str(error.value)
    assert f"asset '{ZIPPED}'" in message and str(tmp_path / ZIPPED) in message and "\n" not in message


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(assets.CACHE_ENV, raising=False)
    assert assets.cache_dir().name == "cest"
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    assert assets.cache_dir() == tmp_path
