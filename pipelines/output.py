"""The output directory: one Parquet file per input, written atomically by the task that processed it.

    clips/part-{input_id}.parquet    all clip rows (segments) of one accepted input
    rejects/part-{input_id}.parquet  the reject row of an input that can never become clips
    retry/part-{input_id}.parquet    the reject row of a transient failure (timeout, I/O): redone next run
    .tmp/                            files being written (renamed into place when complete)

Nothing is lost and nothing duplicated, with no lock: a file's name is its input's id, so an input is
done exactly when its clips or rejects file exists, a killed run keeps every input whose file was
renamed into place, a redone input replaces its file whole (rename is atomic), and two runs on one
output that process the same input write the same name. A run deletes only temporaries older than
STALE_TEMPORARY_S (left by a dead run; a live writer touches its file at every segment), the retry
file of an input it has just finished, and, with `--redo-rejects`, the reject files of the inputs it
queues again (withdrawn: a killed run leaves those inputs to the next). Every input ends as all its
segments or one reject row.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset
import pyarrow.fs
import pyarrow.parquet as pq

from pipelines.inputs import resolve
from pipelines.schema import CLIP_SCHEMA, REJECT_SCHEMA

TEMPORARY_DIRECTORY = ".tmp"
STALE_TEMPORARY_S = 6 * 3600.0  # far longer than any one input takes between two writes
KINDS = {"clip": ("clips", CLIP_SCHEMA), "reject": ("rejects", REJECT_SCHEMA), "retry": ("retry", REJECT_SCHEMA)}


class OutputError(ValueError):
    """The output directory cannot be used with these settings (reported as one line, exit code 2)."""


class PartWriter:
    """One input's file: row groups appended as they are produced (bounded memory), renamed into
    place by commit(); abort() (or an exception inside `with`) deletes the temporary."""

    def __init__(self, output: "Output", kind: str, input_id: str):
        self.output, self.kind, self.input_id = output, kind, input_id
        directory = posixpath.join(output.root, TEMPORARY_DIRECTORY)
        output.fs.create_dir(directory, recursive=True)
        self.temporary = posixpath.join(directory, f"{input_id}-{uuid.uuid4().hex}.parquet")
        self._stream = output.fs.open_output_stream(self.temporary)
        self._writer = pq.ParquetWriter(self._stream, KINDS[kind][1])
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.select(KINDS[self.kind][1].names).cast(KINDS[self.kind][1]))
        self._stream.flush()
        self.rows += table.num_rows

    def commit(self) -> str:
        self._writer.close()
        self._stream.close()
        final = self.output.part_path(self.kind, self.input_id)
        self.output.fs.create_dir(posixpath.dirname(final), recursive=True)
        self.output.fs.move(self.temporary, final)
        if self.kind != "retry":  # the input is finished: an earlier transient failure no longer counts
            self.output.delete_if_present(self.output.part_path("retry", self.input_id))
        return final

    def abort(self) -> None:
        try:
            self._writer.close()
            self._stream.close()
        finally:
            self.output.delete_if_present(self.temporary)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if kind is not None:
            self.abort()


class Output:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = resolve(uri)

    def directory(self, kind: str) -> str:
        return posixpath.join(self.root, KINDS[kind][0])

    def part_path(self, kind: str, input_id: str) -> str:
        return posixpath.join(self.directory(kind), f"part-{input_id}.parquet")

    def part_files(self, kind: str) -> list[str]:
        selector = pyarrow.fs.FileSelector(self.directory(kind), allow_not_found=True)
        return sorted(
            info.path
            for info in self.fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.File and info.base_name.endswith(".parquet")
        )

    def writer(self, kind: str, input_id: str) -> PartWriter:
        return PartWriter(self, kind, input_id)

    def write_part(self, kind: str, input_id: str, table: pa.Table) -> str:
        with self.writer(kind, input_id) as writer:
            writer.write(table)
            return writer.commit()

    def delete_if_present(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def done(self, input_ids: list[str]) -> list[bool]:
        """Whether each input has its clips or its (permanent) reject file; one listing call."""
        paths = [self.part_path(kind, input_id) for input_id in input_ids for kind in ("clip", "reject")]
        found = [info.type == pyarrow.fs.FileType.File for info in self.fs.get_file_info(paths)]
        return [found[2 * index] or found[2 * index + 1] for index in range(len(input_ids))]

    def withdraw_rejects(self, input_ids: list[str]) -> None:
        """Delete these inputs' reject files, so that they are processed again (--redo-rejects)."""
        infos = self.fs.get_file_info([self.part_path("reject", input_id) for input_id in input_ids])
        for info in infos:
            if info.type == pyarrow.fs.FileType.File:
                self.delete_if_present(info.path)

    def remove_stale_temporaries(self, max_age_s: float = STALE_TEMPORARY_S) -> int:
        selector = pyarrow.fs.FileSelector(posixpath.join(self.root, TEMPORARY_DIRECTORY), allow_not_found=True)
        cutoff = time.time() - max_age_s
        stale = [info.path for info in self.fs.get_file_info(selector) if info.mtime and info.mtime.timestamp() < cutoff]
        for path in stale:
            self.delete_if_present(path)
        return len(stale)

    def read(self, kind: str, columns: list[str]) -> pa.Table:
        """Only these columns of every part file of `kind` (Arrow's dataset scanner, no Python loop)."""
        schema = pa.schema([KINDS[kind][1].field(name) for name in columns])
        if self.fs.get_file_info(self.directory(kind)).type != pyarrow.fs.FileType.Directory:
            return schema.empty_table()
        dataset = pyarrow.dataset.dataset(
            self.directory(kind), schema=KINDS[kind][1], format="parquet", filesystem=self.fs
        )
        return dataset.to_table(columns=columns).cast(schema)

    # Run configuration -------------------------------------------------------------------------
    def check_settings(self, settings: dict, defaults: dict | None = None) -> None:
        """Record the settings on first use; refuse to mix outputs written with other settings. A setting
        the recorded file lacks (added to the pipeline after the output was written) counts as its value
        in `defaults`, which is how that output was made."""
        path = posixpath.join(self.root, "run_config.json")
        self.fs.create_dir(self.root, recursive=True)
        if self.fs.get_file_info(path).type == pyarrow.fs.FileType.File:
            with self.fs.open_input_stream(path) as stream:
                recorded = {**(defaults or {}), **json.loads(stream.read())}
            changed = sorted(key for key in set(recorded) | set(settings) if recorded.get(key) != settings.get(key))
            if changed:
                raise OutputError(
                    f"output {self.uri} was written with other settings ({', '.join(changed)}); "
                    "use a new output directory or the same settings"
                )
            return
        with self.fs.open_output_stream(path) as stream:
            stream.write(json.dumps(settings, indent=1, sort_keys=True).encode())

    # Summary -------------------------------------------------------------------------------------
    def summary(self, input_ids: pa.Array) -> dict:
        """Counts over what the output holds for these inputs (unique ids), and the accounting checks."""
        wanted = pc.unique(input_ids.cast(pa.string()))
        clips = self.read("clip", ["input_id", "segment_key", "num_frames"])
        clips = clips.filter(pc.is_in(clips.column("input_id"), wanted))
        rejects = self.read("reject", ["input_id", "reason"])
        rejects = rejects.filter(pc.is_in(rejects.column("input_id"), wanted))
        accepted = pc.unique(clips.column("input_id"))
        rejected = pc.unique(rejects.column("input_id"))
        retry = self.read("retry", ["input_id", "reason"])
        finished = pa.concat_arrays([accepted, rejected])
        retry = retry.filter(
            pc.and_(pc.is_in(retry.column("input_id"), wanted), pc.invert(pc.is_in(retry.column("input_id"), finished)))
        )
        both = int(pc.sum(pc.is_in(accepted, rejected)).as_py() or 0)
        keys = clips.column("segment_key")
        return {
            "inputs": len(wanted),
            "accepted_inputs": len(accepted),
            "rejected_inputs": len(rejected),
            "retry_inputs": len(pc.unique(retry.column("input_id"))),
            "clip_rows": clips.num_rows,
            "frames": int(pc.sum(clips.column("num_frames")).as_py() or 0),
            "rejects_by_reason": _counts(rejects.column("reason")),
            "retry_by_reason": _counts(retry.column("reason")),
            "duplicate_clip_rows": len(keys) - len(pc.unique(keys)),
            "duplicate_reject_rows": rejects.num_rows - len(rejected),
            "accepted_and_rejected": both,
            "balanced": len(wanted) == len(accepted) + len(rejected) + len(pc.unique(retry.column("input_id")))
            and not both,
        }

    def write_summary(self, summary: dict) -> None:
        with self.fs.open_output_stream(posixpath.join(self.root, "summary.json")) as stream:
            stream.write(json.dumps(summary, indent=1, sort_keys=True).encode())


def _counts(column: pa.ChunkedArray) -> dict:
    counts = pc.value_counts(column).to_pylist()
    return dict(sorted((entry["values"], entry["counts"]) for entry in counts))
