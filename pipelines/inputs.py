"""Find the inputs: a VoxCeleb-layout tree {speaker}/{video}/{clip}.mp4 (or a folder of images), a
CSV/Parquet manifest with a `path` column, or a single video or image.

At VoxCeleb2 scale (1 M clips) nothing here runs per input on the driver: `input_source` only looks at
the top of the input (a manifest's header, whether the location is a directory), and the listing and
the per-input work (canonical location, ids, already-done check) run in Ray Data tasks over batches.

Identity: an input is its canonical location. Local paths are made absolute with symlinks resolved
(`os.path.realpath`), URIs are normalised (scheme and host lower-case, `.`/`..`/`//` collapsed), so
that every spelling of one file gives one `input_id` and one output file. Paths may be local or any URI
that pyarrow.fs (or fsspec, through pyarrow's FSSpecHandler) understands.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import posixpath
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute
import pyarrow.csv
import pyarrow.fs
import pyarrow.parquet

# What PyAV (the decoder; also for the files decord cannot open) and the image reader (OpenCV; pi-heif for
# HEIC) open, each tested in test_pipelines_decode.py; a tree's other files are not inputs.
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".3gp", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv"
)
HEIF_SUFFIXES = (".heic", ".heif")  # iPhones' photos: read through pi-heif, the other images through OpenCV
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm") + HEIF_SUFFIXES
MEDIA_SUFFIXES = VIDEO_SUFFIXES + IMAGE_SUFFIXES
MANIFEST_SUFFIXES = (".csv", ".parquet")
ID_COLUMNS = ("speaker_id", "video_id", "clip_id")
# What the listing yields: locations as given (ids are filled in by `resolve_batch`).
LISTING_SCHEMA = pa.schema([pa.field(name, pa.string()) for name in ("path",) + ID_COLUMNS])
LISTING_BATCH = 4096  # rows per listed batch


class InputError(ValueError):
    """The input location or manifest is unusable (reported as one line, exit code 2)."""


@dataclass(frozen=True)
class VideoInput:
    input_id: str  # stable id of the source (hash of its canonical location); resume and dedup key
    path: str  # canonical local path or URI
    speaker_id: str
    video_id: str
    clip_id: str

    @property
    def key(self) -> str:
        """'{speaker_id}/{video_id}/{clip_id}': what names this input's rows (its clips' segment_keys start with it)."""
        return f"{self.speaker_id}/{self.video_id}/{self.clip_id}"


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


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


def _joined(location: str, base: str) -> str:
    """`location` with a relative path made relative to `base` (a directory, local path or URI)."""
    location = location.removeprefix("file://")
    if "://" in location or os.path.isabs(location) or not base:
        return location
    return base.rstrip("/") + "/" + location if "://" in base else os.path.join(base, location)


def canonical_location(location: str, base: str = "") -> str:
    """One spelling per file: absolute local paths with symlinks resolved; normalised URIs.
    Relative locations are relative to `base` (a manifest's directory, local path or URI)."""
    location = _joined(location, base)
    if "://" in location:
        scheme, rest = location.split("://", 1)
        host, _, path = rest.partition("/")
        path = posixpath.normpath("/" + path).lstrip("/") if path else ""
        return f"{scheme.lower()}://{host.lower()}/{path}" if path else f"{scheme.lower()}://{host.lower()}"
    return os.path.realpath(location)  # a symlink loop stays unresolved (no error), still one spelling


def input_id_for(location: str) -> str:
    return hashlib.sha1(location.encode()).hexdigest()[:16]


def ids_from_path(path: str) -> tuple[str, str, str]:
    """VoxCeleb layout: .../{speaker_id}/{video_id}/{clip}.mp4; missing levels become ''.
    The clip id is the file name without `.mp4` (the VoxCeleb case); other suffixes stay in it, so
    that 00001.mp4 and 00001.avi beside each other never share a clip id."""
    parts = path.rstrip("/").split("/")
    name = parts[-1]
    clip = name[: -len(".mp4")] if name.lower().endswith(".mp4") else name
    video = parts[-2] if len(parts) >= 2 else ""
    speaker = parts[-3] if len(parts) >= 3 else ""
    return speaker, video, clip


def make_input(location: str, speaker_id: str = "", video_id: str = "", clip_id: str = "", base: str = "") -> VideoInput:
    """The input for `location` as given (ids come from the path as given, identity from its canonical form)."""
    joined = _joined(location, base)
    speaker, video, clip = ids_from_path(os.path.normpath(joined) if "://" not in joined else joined)
    return VideoInput(
        input_id=input_id_for(canonical_location(joined)),
        path=canonical_location(joined),
        speaker_id=speaker_id or speaker,
        video_id=video_id or video,
        clip_id=clip_id or clip,
    )


# The source of the input stream -------------------------------------------------------------------
@dataclass(frozen=True)
class InputSource:
    """What the driver learns about the input before the job starts (no per-input work)."""

    kind: str  # tree | manifest | file
    uri: str  # as given
    location: str  # canonical: the tree's root, the manifest's own location, or the single file
    base: str = ""  # directory relative manifest paths are relative to


def _location(uri: str, fs: pyarrow.fs.FileSystem, path: str) -> str:
    """How workers address a file: a plain path for local files, otherwise a URI with the input's scheme."""
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return path
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{path}"


def input_source(uri: str) -> InputSource:
    """Classify the input and check it can be used; raise InputError with a one-line reason."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise InputError(f"input not found: {uri}")
    location = _location(uri, fs, path)
    if info.type == pyarrow.fs.FileType.Directory:
        return InputSource("tree", uri, canonical_location(location))
    if path.lower().endswith(MANIFEST_SUFFIXES):
        columns = manifest_columns(fs, path, uri)
        if "path" not in columns:
            raise InputError(f"manifest {uri} has no 'path' column (columns: {', '.join(columns)})")
        return InputSource("manifest", uri, location, base=canonical_location(posixpath.dirname(location)))
    if path.lower().endswith(MEDIA_SUFFIXES):
        return InputSource("file", uri, location)
    raise InputError(f"input {uri} is neither a directory, a .csv/.parquet manifest, a video nor an image")


def manifest_columns(fs: pyarrow.fs.FileSystem, path: str, uri: str) -> list[str]:
    """The manifest's column names, from its header or Parquet footer only."""
    try:
        if path.endswith(".parquet"):
            with fs.open_input_file(path) as handle:
                return pyarrow.parquet.read_schema(handle).names
        with fs.open_input_stream(path) as handle:
            reader = pyarrow.csv.open_csv(handle, convert_options=manifest_csv_options())
            return reader.schema.names
    except (pyarrow.ArrowInvalid, OSError) as error:
        raise InputError(f"cannot read manifest {uri}: {error}") from error


def manifest_csv_options() -> pyarrow.csv.ConvertOptions:
    # Ids such as 00001 must stay strings, not become integers.
    return pyarrow.csv.ConvertOptions(column_types={name: pa.string() for name in ("path",) + ID_COLUMNS})


def manifest_batch(batch: pa.Table) -> pa.Table:
    """A manifest batch in LISTING_SCHEMA: `path` and whichever id columns it has (strings, '' if absent)."""
    columns = {}
    for name in LISTING_SCHEMA.names:
        if name in batch.column_names:
            columns[name] = pyarrow.compute.fill_null(batch.column(name).cast(pa.string()), "")
        else:
            columns[name] = pa.array([""] * batch.num_rows, pa.string())
    return pa.table(columns, schema=LISTING_SCHEMA)


def walk_tree(root: str) -> Iterator[pa.Table]:
    """All media files under `root`, in batches of LISTING_BATCH rows, each batch largest file first
    (runs in a Ray task). Inputs start in that order, so that a long video does not start last and
    keep one worker busy after the others have finished (on the sample the 1,008-frame clip did).
    Local trees follow directory symlinks once each (a loop is entered once, never again)."""
    files = _walk_local(root) if "://" not in root else _walk_remote(root)
    while batch := list(itertools.islice(files, LISTING_BATCH)):
        yield _listing([path for path, _ in sorted(batch, key=lambda file: -file[1])])


def _listing(paths: list[str]) -> pa.Table:
    empty = pa.array([""] * len(paths), pa.string())
    return pa.table([pa.array(paths, pa.string()), empty, empty, empty], schema=LISTING_SCHEMA)


def _walk_local(root: str) -> Iterator[tuple[str, int]]:
    """(path, size in bytes) of the media files under `root`. What cannot be listed (a directory without
    permission, a media name that is a broken link) is named in a warning on stderr, never passed over
    silently."""
    seen, stack = {os.path.realpath(root)}, [root]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            _listing_warning(f"cannot list {directory} ({error.strerror or error}): its files are not inputs")
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    real = os.path.realpath(entry.path)
                    if real not in seen:
                        seen.add(real)
                        stack.append(entry.path)
                elif entry.name.lower().endswith(MEDIA_SUFFIXES):
                    if not entry.is_file():
                        _listing_warning(f"cannot read {entry.path} (not a file: a broken link?): not an input")
                        continue
                    yield entry.path, entry.stat().st_size
            except OSError as error:
                _listing_warning(f"cannot read {entry.path} ({error.strerror or error}): not an input")


def _listing_warning(message: str) -> None:
    # Runs in the listing's Ray task: Ray shows a task's stderr on the driver's console.
    print(f"preprocess: warning: {message}", file=sys.stderr)


def _walk_remote(root: str) -> Iterator[tuple[str, int]]:
    """(location, size in bytes) of the media files under the URI `root`."""
    fs, path = resolve(root)
    stack = [path]
    while stack:
        directory = stack.pop()
        for info in sorted(fs.get_file_info(pyarrow.fs.FileSelector(directory)), key=lambda info: info.path):
            if info.type == pyarrow.fs.FileType.Directory:
                stack.append(info.path)
            elif info.type == pyarrow.fs.FileType.File and info.path.lower().endswith(MEDIA_SUFFIXES):
                yield _location(root, fs, info.path), info.size or 0


def resolve_batch(batch: pa.Table, base: str = "") -> list[VideoInput]:
    """Listing rows -> inputs with canonical locations and ids (runs in a Ray task)."""
    inputs = []
    for row in batch.to_pylist():
        if not row["path"]:
            continue
        ids = {name: row[name] for name in ID_COLUMNS if row.get(name)}
        inputs.append(make_input(row["path"], base=base, **ids))
    return inputs


def discover_inputs(uri: str) -> list[VideoInput]:
    """All inputs under uri, in this process, unique by input_id, sorted by location (small inputs,
    tests and tools; the job itself streams the listing through Ray Data)."""
    source = input_source(uri)
    if source.kind == "tree":
        batches = list(walk_tree(source.location))
    elif source.kind == "manifest":
        fs, path = resolve(uri)
        with fs.open_input_file(path) as handle:
            if path.endswith(".parquet"):
                table = pyarrow.parquet.read_table(handle)
            else:
                table = pyarrow.csv.read_csv(handle, convert_options=manifest_csv_options())
        batches = [manifest_batch(table)]
    else:
        batches = [_listing([source.location])]
    inputs = [item for batch in batches for item in resolve_batch(batch, source.base)]
    if not inputs:
        raise InputError(f"no videos or images ({', '.join(MEDIA_SUFFIXES)}) found under {uri}")
    unique = {item.input_id: item for item in inputs}
    return sorted(unique.values(), key=lambda item: item.path)

