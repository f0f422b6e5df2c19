"""Find the input videos: a VoxCeleb-layout tree {speaker}/{video}/{clip}.mp4 or a CSV/Parquet manifest.

Paths may be local or any URI that pyarrow.fs (or fsspec, through pyarrow's FSSpecHandler) understands.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

import pyarrow.csv
import pyarrow.fs
import pyarrow.parquet

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
MANIFEST_SUFFIXES = (".csv", ".parquet")


class InputError(ValueError):
    """The input location or manifest is unusable (reported as one line, exit code 2)."""


@dataclass(frozen=True)
class VideoInput:
    input_id: str  # stable id of the source (hash of its location); resume and dedup key
    path: str  # local path or URI
    speaker_id: str
    video_id: str
    clip_id: str


def resolve(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI."""
    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, ValueError):
        pass
    if "://" in uri:
        try:
            import fsspec
        except ImportError as error:
            raise InputError(f"cannot open {uri}: unknown filesystem and fsspec is not installed") from error
        fs, path = fsspec.core.url_to_fs(uri)
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path
    return pyarrow.fs.FileSystem.from_uri(posixpath.abspath(uri))


def input_id_for(location: str) -> str:
    return hashlib.sha1(location.encode()).hexdigest()[:16]


def _ids_from_path(path: str) -> tuple[str, str, str]:
    """VoxCeleb layout: .../{speaker_id}/{video_id}/{clip}.mp4; missing levels become ''."""
    parts = path.rstrip("/").split("/")
    clip = posixpath.splitext(parts[-1])[0]
    video = parts[-2] if len(parts) >= 2 else ""
    speaker = parts[-3] if len(parts) >= 3 else ""
    return speaker, video, clip


def _location(uri: str, fs: pyarrow.fs.FileSystem, path: str) -> str:
    """How workers address a file: a plain path for local files, otherwise a URI with the input's scheme."""
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return path
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{path}"


def make_input(location: str, speaker_id: str = "", video_id: str = "", clip_id: str = "") -> VideoInput:
    speaker, video, clip = _ids_from_path(location)
    return VideoInput(
        input_id=input_id_for(location),
        path=location,
        speaker_id=speaker_id or speaker,
        video_id=video_id or video,
        clip_id=clip_id or clip,
    )


def _read_manifest(fs: pyarrow.fs.FileSystem, path: str):
    with fs.open_input_file(path) as handle:
        if path.endswith(".csv"):
            return pyarrow.csv.read_csv(handle)
        return pyarrow.parquet.read_table(handle)


def _from_manifest(uri: str, fs: pyarrow.fs.FileSystem, path: str) -> list[VideoInput]:
    try:
        table = _read_manifest(fs, path)
    except (pyarrow.ArrowInvalid, OSError) as error:
        raise InputError(f"cannot read manifest {uri}: {error}") from error
    if "path" not in table.column_names:
        raise InputError(f"manifest {uri} has no 'path' column (columns: {', '.join(table.column_names)})")
    base = posixpath.dirname(path)
    inputs = []
    for row in table.to_pylist():
        entry = str(row["path"] or "")
        if not entry:
            raise InputError(f"manifest {uri} has an empty path")
        if "://" not in entry and not posixpath.isabs(entry):
            entry = _location(uri, fs, posixpath.normpath(posixpath.join(base, entry)))
        ids = {key: str(row[key]) for key in ("speaker_id", "video_id", "clip_id") if row.get(key) is not None}
        inputs.append(make_input(entry, **ids))
    return inputs


def _from_tree(uri: str, fs: pyarrow.fs.FileSystem, path: str) -> list[VideoInput]:
    selector = pyarrow.fs.FileSelector(path, recursive=True)
    files = [
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.File and info.path.lower().endswith(VIDEO_SUFFIXES)
    ]
    return [make_input(_location(uri, fs, file)) for file in files]


def discover_inputs(uri: str) -> list[VideoInput]:
    """All inputs under uri (tree, manifest or a single video), sorted by location, ids unique."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise InputError(f"input not found: {uri}")
    if info.type == pyarrow.fs.FileType.Directory:
        inputs = _from_tree(uri, fs, path)
    elif path.lower().endswith(MANIFEST_SUFFIXES):
        inputs = _from_manifest(uri, fs, path)
    elif path.lower().endswith(VIDEO_SUFFIXES):
        inputs = [make_input(_location(uri, fs, path))]
    else:
        raise InputError(f"input {uri} is neither a directory, a .csv/.parquet manifest nor a video")
    if not inputs:
        raise InputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) found under {uri}")
    unique = {item.input_id: item for item in inputs}
    return sorted(unique.values(), key=lambda item: item.path)
