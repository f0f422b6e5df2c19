"""The output directory: atomic Parquet part files, resume bookkeeping and the run summary.

Resume without duplicates: every part file is written under a temporary name and renamed into place
only when complete, so a killed run leaves whole files (plus temporaries, deleted on restart). An input
is done when it has a reject row or all `num_segments` of its segments. Before a run, inputs with only
some segments on disk (their rows were split across part files and the run died in between) have those
rows removed by rewriting the affected files, and then every input that is not done is processed again.
"""

from __future__ import annotations

import collections
import json
import posixpath
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs
import pyarrow.parquet as pq

from pipelines.inputs import resolve
from pipelines.schema import CLIP_SCHEMA, REJECT_SCHEMA

TEMPORARY_PREFIX = ".tmp-"
KINDS = {"clip": ("clips", CLIP_SCHEMA), "reject": ("rejects", REJECT_SCHEMA)}


class OutputError(ValueError):
    """The output directory cannot be used with these settings (reported as one line, exit code 2)."""


class Output:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = resolve(uri)

    def directory(self, kind: str) -> str:
        return posixpath.join(self.root, KINDS[kind][0])

    def part_files(self, kind: str) -> list[str]:
        selector = pyarrow.fs.FileSelector(self.directory(kind), allow_not_found=True)
        return sorted(
            info.path
            for info in self.fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(TEMPORARY_PREFIX)
        )

    def write_part(self, kind: str, table: pa.Table) -> str:
        """Write `table` as a new part file, atomically (temporary name, then rename)."""
        directory = self.directory(kind)
        self.fs.create_dir(directory, recursive=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        temporary = posixpath.join(directory, TEMPORARY_PREFIX + name)
        with self.fs.open_output_stream(temporary) as stream:
            pq.write_table(table, stream, row_group_size=16)
        final = posixpath.join(directory, name)
        self.fs.move(temporary, final)
        return final

    def read(self, kind: str, columns: list[str]) -> pa.Table:
        schema = KINDS[kind][1]
        tables = [pq.read_table(path, columns=columns, filesystem=self.fs) for path in self.part_files(kind)]
        empty = pa.schema([schema.field(name) for name in columns]).empty_table()
        return pa.concat_tables([empty] + tables) if tables else empty

    # Run configuration -------------------------------------------------------------------------
    def check_settings(self, settings: dict) -> None:
        """Record the settings on first use; refuse to mix outputs written with other settings."""
        path = posixpath.join(self.root, "run_config.json")
        self.fs.create_dir(self.root, recursive=True)
        if self.fs.get_file_info(path).type == pyarrow.fs.FileType.File:
            with self.fs.open_input_stream(path) as stream:
                recorded = json.loads(stream.read())
            changed = sorted(key for key in set(recorded) | set(settings) if recorded.get(key) != settings.get(key))
            if changed:
                raise OutputError(
                    f"output {self.uri} was written with other settings ({', '.join(changed)}); "
                    "use a new output directory or the same settings"
                )
            return
        with self.fs.open_output_stream(path) as stream:
            stream.write(json.dumps(settings, indent=1, sort_keys=True).encode())

    # Resume --------------------------------------------------------------------------------------
    def remove_temporaries(self) -> int:
        removed = 0
        for kind in KINDS:
            selector = pyarrow.fs.FileSelector(self.directory(kind), allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                if info.base_name.startswith(TEMPORARY_PREFIX):
                    self.fs.delete_file(info.path)
                    removed += 1
        return removed

    def completed_inputs(self) -> tuple[set[str], set[str]]:
        """(input ids that are done, input ids with only some of their segments written)."""
        clips = self.read("clip", ["input_id", "segment_index", "num_segments"]).to_pydict()
        segments = collections.defaultdict(set)
        expected = {}
        for input_id, index, count in zip(clips["input_id"], clips["segment_index"], clips["num_segments"]):
            segments[input_id].add(index)
            expected[input_id] = count
        complete = {key for key, found in segments.items() if len(found) == expected[key]}
        partial = set(segments) - complete
        rejected = set(self.read("reject", ["input_id"]).column("input_id").to_pylist())
        return complete | rejected, partial

    def drop_inputs(self, input_ids: set[str]) -> None:
        """Rewrite the clip files holding rows of `input_ids` without those rows."""
        for path in self.part_files("clip"):
            ids = pq.read_table(path, columns=["input_id"], filesystem=self.fs).column("input_id")
            if not pc.any(pc.is_in(ids, pa.array(sorted(input_ids)))).as_py():
                continue
            table = pq.read_table(path, filesystem=self.fs)
            keep = table.filter(pc.invert(pc.is_in(table.column("input_id"), pa.array(sorted(input_ids)))))
            if keep.num_rows:
                self.write_part("clip", keep)
            self.fs.delete_file(path)

    def prepare_resume(self) -> set[str]:
        """Clean up after a killed run; return the ids of inputs that need no more work."""
        self.remove_temporaries()
        done, partial = self.completed_inputs()
        if partial:
            self.drop_inputs(partial)
        return done

    # Summary -------------------------------------------------------------------------------------
    def summary(self, input_ids: list[str]) -> dict:
        """Counts over everything in the output for these inputs, and the accounting checks."""
        clips = self.read("clip", ["input_id", "segment_key", "num_frames"])
        rejects = self.read("reject", ["input_id", "reason"])
        wanted = set(input_ids)
        accepted = set(clips.column("input_id").to_pylist()) & wanted
        rejected_rows = [row for row in rejects.to_pylist() if row["input_id"] in wanted]
        rejected = {row["input_id"] for row in rejected_rows}
        keys = clips.column("segment_key").to_pylist()
        return {
            "inputs": len(wanted),
            "accepted_inputs": len(accepted),
            "rejected_inputs": len(rejected),
            "clip_rows": len(keys),
            "frames": int(pc.sum(clips.column("num_frames")).as_py() or 0),
            "rejects_by_reason": dict(sorted(collections.Counter(row["reason"] for row in rejected_rows).items())),
            "duplicate_clip_rows": len(keys) - len(set(keys)),
            "duplicate_reject_rows": len(rejected_rows) - len(rejected),
            "accepted_and_rejected": len(accepted & rejected),
            "balanced": len(wanted) == len(accepted) + len(rejected) and not accepted & rejected,
        }

    def write_summary(self, summary: dict) -> None:
        with self.fs.open_output_stream(posixpath.join(self.root, "summary.json")) as stream:
            stream.write(json.dumps(summary, indent=1, sort_keys=True).encode())
