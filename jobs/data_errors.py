"""The data-error policy of every job that reads clip Parquet: training (jobs/data.py, jobs/train.py),
`jobs.eval --clips`, `jobs.reconstruct --annotate` and the synthetic tools (through jobs/frames.py).

A clip file or row that cannot be read or decoded is skipped, counted and named, never a traceback:
- files, checked before any worker starts from their Parquet footers only (read in parallel, `survey`): not
  Parquet or truncated (no footer), a needed column missing or of another type;
- row groups, where they are read (`row_groups`, `read_clip_file`): one that does not read behind a good footer
  (a corrupt page) is skipped as "row group K", its rows counted;
- rows, checked where they are read (`row_problem`, `decode_or_skip`): frame, mask or landmark counts that do
  not match num_frames, non-finite landmarks, fewer frames than a sample needs, a frame or mask that does not
  decode.
Each skip is one warning line (file, segment key, reason) and one entry of the job's skipped.jsonl (`SkipList`,
deduplicated by file and segment key: a row found bad again in a later pass is not listed again). A job fails
with one error line (DataError) only when nothing is readable or when the skipped share of its samples passes
`data.max_skipped_fraction`.

A sample is a clip row. A file whose footer cannot be read counts as the corpus's mean rows per readable file
(its own count is in the footer it lacks). Entries carry their file's size and modification time: a job that
starts again (a resume, a rerun into the same output) keeps the entries of unchanged files and drops those of
changed ones, which are read again like any other file.

Ray-free; the Ray glue (an actor holding the job's SkipList, the map tasks' reports) is in jobs/data.py.
"""

import json
import math
import posixpath
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from pipelines.inputs import resolve
from pipelines.schema import CLIP_SCHEMA, SchemaError, decode_clip_row

SKIP_FILE = "skipped.jsonl"
WHOLE_FILE = ""  # the segment key of a skip that is a whole file
ROW_GROUP = "row group "  # the segment key of a skip that is a row group: "row group 3"
# Footer reads wait on storage latency (object stores: tens of ms each), not on CPU: many at once.
FOOTER_THREADS = 32
# Values per frame of the per-frame list columns (pipelines.schema.CLIP_COLUMNS).
PER_FRAME_VALUES = {"frames_jpeg": 1, "masks_png": 1, "landmarks": 136, "frame_indices": 1, "crop_transforms": 6}
# The exceptions by which pyarrow says a file cannot be read (a truncated file, a network error).
READ_ERRORS = (OSError, pa.ArrowException)


class DataError(ValueError):
    """The data cannot be used (nothing readable, or too much of it bad): reported as one line, exit status 2."""


@dataclass(frozen=True)
class Skip:
    file: str
    segment_key: str  # WHOLE_FILE for a file
    reason: str
    samples: int = 1  # the samples (clip rows) it stands for

    def line(self) -> str:
        what = (f"file {self.file}" if self.segment_key == WHOLE_FILE else f"{self.segment_key} of {self.file}"
                if self.segment_key.startswith(ROW_GROUP) else f"row {self.segment_key} of {self.file}")
        return f"warning: skipped {what}: {self.reason}"


@dataclass
class Corpus:
    """The clip files of one data location after the footer checks."""

    data: str
    fs: pyarrow.fs.FileSystem
    files: list[str]  # the readable ones, sorted
    rows: dict[str, int]  # rows of each readable file (its footer)
    skips: list[Skip]  # the files that failed the checks
    fingerprints: dict[str, str] = field(default_factory=dict)  # every listed file: "size:mtime_ns"

    @property
    def samples(self) -> int:
        return sum(self.rows.values()) + sum(skip.samples for skip in self.skips)


def list_clip_files(data: str) -> tuple[pyarrow.fs.FileSystem, list[pyarrow.fs.FileInfo]]:
    """(filesystem, infos of the .parquet files under data/clips), or DataError when there are none."""
    fs, root = resolve(data)
    directory = posixpath.join(root, "clips")
    if fs.get_file_info(directory).type != pyarrow.fs.FileType.Directory:
        raise DataError(f"{data} holds no clips/ directory (the output of `make preprocess`)")
    infos = sorted((info for info in fs.get_file_info(pyarrow.fs.FileSelector(directory))
                    if info.base_name.endswith(".parquet") and not info.base_name.startswith(".")),
                   key=lambda info: info.path)
    if not infos:
        raise DataError(f"{data}/clips holds no .parquet files")
    return fs, infos


def footer_problem(fs: pyarrow.fs.FileSystem, path: str, columns: list[str]) -> tuple[str | None, int | None]:
    """(what is wrong with the file by its footer or None, its row count or None when the footer is unreadable)."""
    try:
        metadata = pq.read_metadata(path, filesystem=fs)
        schema = metadata.schema.to_arrow_schema()
    except READ_ERRORS as error:
        return f"not a readable Parquet file ({error})", None
    for name in columns:
        if name not in schema.names:
            return f"not a clip file: column {name} is missing", metadata.num_rows
        expected = CLIP_SCHEMA.field(name).type
        if schema.field(name).type != expected:
            return f"column {name} is {schema.field(name).type}, expected {expected}", metadata.num_rows
    return None, metadata.num_rows


def _one_line(error: Exception) -> str:
    """An error's message as one line of printable characters (pyarrow's can hold newlines and control bytes)."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(error)).split())[:200]


def row_groups(file: pq.ParquetFile, path: str, columns: list[str] | None = None):
    """The row groups of an opened clip file as tables, each that does not read (a corrupt page behind a good
    footer, a network error mid-file) as a Skip of its rows instead: yields pa.Table or Skip."""
    for group in range(file.num_row_groups):
        try:
            yield file.read_row_group(group, columns=columns)
        except READ_ERRORS as error:
            yield Skip(path, f"{ROW_GROUP}{group}", f"unreadable ({_one_line(error)})",
                       max(file.metadata.row_group(group).num_rows, 1))


def read_clip_file(fs: pyarrow.fs.FileSystem, path: str, columns: list[str] | None = None, rows: int = 1):
    """`row_groups` of a clip file by its path; a file that no longer opens is one Skip of its `rows`."""
    try:
        file = pq.ParquetFile(fs.open_input_file(path))
    except READ_ERRORS as error:
        yield Skip(path, WHOLE_FILE, f"unreadable ({_one_line(error)})", rows)
        return
    yield from row_groups(file, path, columns)


def readable_rows(corpus: Corpus, path: str, skips: "SkipList", columns: list[str] | None = None) -> list[dict]:
    """The rows of a clip file of `corpus` that read, as dicts; its row groups that do not read go to `skips`."""
    rows = []
    for part in read_clip_file(corpus.fs, path, columns, corpus.rows[path]):
        if isinstance(part, Skip):
            skips.add([part])
        else:
            rows += part.to_pylist()
    return rows


def survey(data: str, columns: list[str], threads: int = FOOTER_THREADS) -> Corpus:
    """The clip files of `data` checked by their footers (in parallel); DataError when none is readable."""
    fs, infos = list_clip_files(data)
    with ThreadPoolExecutor(min(threads, len(infos))) as pool:
        checked = list(pool.map(lambda info: footer_problem(fs, info.path, columns), infos))
    rows = {info.path: count for info, (problem, count) in zip(infos, checked) if problem is None}
    if not rows:
        problem = checked[0][0]
        raise DataError(f"{data}/clips: none of its {len(infos)} clip files is readable "
                        f"(first: {infos[0].path}: {problem})")
    mean_rows = math.ceil(sum(rows.values()) / len(rows)) or 1
    skips = [Skip(info.path, WHOLE_FILE, problem, mean_rows if count is None else max(count, 1))
             for info, (problem, count) in zip(infos, checked) if problem is not None]
    fingerprints = {info.path: f"{info.size}:{info.mtime_ns}" for info in infos}
    return Corpus(data, fs, list(rows), rows, skips, fingerprints)


def row_problem(row: dict, frames_needed: int = 1) -> str | None:
    """What makes a clip row unusable without decoding it (None: nothing). `row` maps column names to values
    (a table.to_pylist() row or a numpy batch's row); per-frame columns it lacks are not checked."""
    count = row.get("num_frames")
    if count is None or count < 1:
        return f"num_frames is {count}"
    for name, width in PER_FRAME_VALUES.items():
        if name not in row:
            continue
        if row[name] is None:
            return f"{name} is missing"
        if len(row[name]) != count * width:
            return f"{name} holds {len(row[name])} values for {count} frames ({width} a frame)"
    if not np.isfinite(np.asarray(row["landmarks"], np.float32)).all():
        return "non-finite landmarks"
    if count < frames_needed:
        return f"{count} frames, fewer than the {frames_needed} a sample needs"
    return None


def decode_or_skip(row: dict, file: str, frames_needed: int = 1) -> tuple[dict | None, Skip | None]:
    """(the row decoded by pipelines.schema.decode_clip_row, None) or (None, the skip that names why not)."""
    problem = row_problem(row, frames_needed)
    if problem is None:
        try:
            return decode_clip_row(row), None
        except SchemaError as error:
            problem = str(error)
    return None, Skip(file, str(row.get("segment_key")), problem)


def share_verdict(skipped: int, samples: int, max_fraction: float, where: str = "") -> str | None:
    """The one error line when `skipped` of `samples` is too large a share (above max_fraction, or all), else None;
    `where` (the list's location, the first bad file) goes before the advice."""
    if samples and skipped >= samples:
        return f"none of the {samples} samples could be read{where}"
    if skipped > max_fraction * samples:
        return (f"{skipped} of {samples} samples could not be read ({skipped / samples:.1%}, above "
                f"data.max_skipped_fraction {max_fraction:.1%}){where}: fix or remove them, or raise the bound")
    return None


def files_verdict(corpora: list[Corpus], max_fraction: float) -> str | None:
    """The one error line when the files that fail their footer checks are already too large a share of the
    samples (before any worker starts), naming the first of them; else None."""
    skips = [skip for corpus in corpora for skip in corpus.skips]
    first = f" (first: {skips[0].file}: {skips[0].reason})" if skips else ""
    return share_verdict(sum(skip.samples for skip in skips), sum(corpus.samples for corpus in corpora),
                         max_fraction, first)


class SkipList:
    """The skips of one job: deduplicated by (file, segment key), each named once in a warning line (stderr),
    kept in `path` (a skipped.jsonl, local or URI; None: not kept) and counted against the job's samples.

    An existing list at `path` is read; `track(corpus)` adds a corpus's samples and skipped files and keeps the
    earlier entries of its files that have not changed since."""

    def __init__(self, path: str | None, max_fraction: float):
        self.path, self.max_fraction = path, max_fraction
        self.samples = 0
        self.entries: dict[tuple[str, str], dict] = {}
        self.fingerprints: dict[str, str] = {}
        self._earlier = self._read() if path else []
        self._written = None if self._earlier else 0  # entries in the file; None: to be rewritten

    def _read(self) -> list[dict]:
        fs, file = resolve(self.path)
        if fs.get_file_info(file).type != pyarrow.fs.FileType.File:
            return []
        with fs.open_input_stream(file) as stream:
            return [json.loads(line) for line in stream.read().decode().splitlines() if line.strip()]

    def track(self, corpus: Corpus) -> None:
        self.samples += corpus.samples
        self.fingerprints.update(corpus.fingerprints)
        for entry in self._earlier:
            if corpus.fingerprints.get(entry["file"]) == entry["fingerprint"]:
                self.entries[entry["file"], entry["segment_key"]] = entry
        self.add(corpus.skips)

    def add(self, skips: Iterable[Skip]) -> int:
        """Record skips; each new one is a warning line. Returns how many were new."""
        new = 0
        for skip in skips:
            key = (skip.file, skip.segment_key)
            if key in self.entries:
                continue
            self.entries[key] = asdict(skip) | {"fingerprint": self.fingerprints.get(skip.file, "")}
            print(skip.line(), file=sys.stderr, flush=True)
            new += 1
        return new

    @property
    def skipped_samples(self) -> int:
        return sum(entry["samples"] for entry in self.entries.values())

    def verdict(self) -> str | None:
        """The job's one error line when too much of its data is bad, else None."""
        return share_verdict(self.skipped_samples, self.samples, self.max_fraction,
                             f" (listed in {self.path})" if self.path else "")

    def status(self) -> tuple[int, bool]:
        """(skipped samples so far, whether the job must stop); writes the list first."""
        self.flush()
        return self.skipped_samples, self.verdict() is not None

    def flush(self) -> None:
        """Write the list when it changed (the whole file: object stores cannot append)."""
        if self.path is None or self._written == len(self.entries):
            return
        fs, file = resolve(self.path)
        fs.create_dir(posixpath.dirname(file), recursive=True)
        with fs.open_output_stream(file) as stream:
            stream.write("".join(json.dumps(entry) + "\n" for entry in self.entries.values()).encode())
        self._written = len(self.entries)

    def enforce(self) -> None:
        """Write the list; DataError with the one error line when too much of the data is bad."""
        self.flush()
        line = self.verdict()
        if line is not None:
            raise DataError(line)
