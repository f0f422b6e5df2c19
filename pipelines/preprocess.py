"""`make preprocess`: talking-head videos -> sharded Parquet face clips, as a streaming Ray Data job.

    python -m pipelines.preprocess --input ../shared/assets/voxceleb_sample --output data/clips

Without --address (and without RAY_ADDRESS, which `ray job submit` sets) it starts an embedded local
Ray. Stages: decode (CPU tasks) -> face landmarks + tracking -> crop, mask, encode -> Parquet. On CPU
the stages run fused in one task per video (no frames through the object store); with the fan
detector and GPUs in the cluster (or with --landmark-actors N) the landmark stage runs on a pool of
actors instead, between CPU tasks for decoding and for cropping.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import PIPELINE_VERSION
from pipelines.config import PreprocessConfig
from pipelines.inputs import VideoInput, discover_inputs
from pipelines.output import KINDS, Output
from pipelines.stages import ROW_SCHEMA, Work, crop_stage, decode_stage, landmark_stage, process_input, rows_table

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RayUnavailable(RuntimeError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, as for every other configuration error
        self.exit(2, f"preprocess: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = PreprocessConfig()
    parser = _Parser(prog="python -m pipelines.preprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="VoxCeleb-layout directory, CSV/Parquet manifest, or URI")
    parser.add_argument("--output", required=True, help="output directory or URI (resumed if it exists)")
    parser.add_argument("--address", help="Ray cluster address (ray://host:10001 or auto); default: local Ray")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    parser.add_argument("--num-gpus", type=int, help="GPUs of the embedded local Ray (default: all)")
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs reserved per video task")
    parser.add_argument(
        "--landmark-actors",
        type=int,
        help="run the landmark stage on a pool of this many actors (one GPU each when the cluster has GPUs); "
        "default: the cluster's GPU count for --detector fan, else 0 (all stages fused in CPU tasks)",
    )
    parser.add_argument("--detector", choices=("dlib", "fan"), default=defaults.detector)
    parser.add_argument("--device", default=defaults.device, help="fan only: auto | cpu | cuda")
    parser.add_argument(
        "--fan-face-detector", default=defaults.fan_face_detector, help="fan only: face_alignment detector module"
    )
    parser.add_argument("--no-tracking", action="store_true", help="detect on every frame instead of tracking")
    parser.add_argument(
        "--all-faces", action="store_true", help="keep tracks of every person, not only the clip's primary face"
    )
    parser.add_argument("--frame-stride", type=int, default=defaults.frame_stride)
    parser.add_argument("--max-frames", type=int, default=defaults.max_frames, help="per video, 0: all")
    parser.add_argument("--max-side", type=int, default=defaults.max_side, help="working frame size bound (px)")
    parser.add_argument("--decode-timeout", type=float, default=defaults.decode_timeout_s, help="seconds per video")
    parser.add_argument("--min-segment-frames", type=int, default=defaults.min_segment_frames)
    parser.add_argument("--max-segment-frames", type=int, default=defaults.max_segment_frames)
    parser.add_argument("--rows-per-file", type=int, default=defaults.rows_per_file)
    return parser


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    return PreprocessConfig(
        detector=args.detector,
        device=args.device,
        fan_face_detector=args.fan_face_detector,
        tracking=not args.no_tracking,
        primary_face_only=not args.all_faces,
        frame_stride=args.frame_stride,
        max_frames=args.max_frames,
        max_side=args.max_side,
        decode_timeout_s=args.decode_timeout,
        min_segment_frames=args.min_segment_frames,
        max_segment_frames=args.max_segment_frames,
        rows_per_file=args.rows_per_file,
    )


# Ray Data functions ------------------------------------------------------------------------------
_WORKER_CACHE: dict = {}


def _worker_models(cfg: PreprocessConfig):
    """(landmarker, masker, identity or None); the models load once per worker process (Ray reuses
    workers across tasks)."""
    from pipelines.identity import FaceIdentity
    from pipelines.landmarks import make_landmarker
    from pipelines.masks import make_masker

    key = (cfg.detector, cfg.device, cfg.fan_face_detector, cfg.dlib_upsample)
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = make_landmarker(cfg)
    if cfg.primary_face_only and "identity" not in _WORKER_CACHE:
        _WORKER_CACHE["identity"] = FaceIdentity()
    identity = _WORKER_CACHE["identity"] if cfg.primary_face_only else None
    return _WORKER_CACHE[key], make_masker(cfg.mask_backend, cfg.skin_threshold), identity


def _items(batch: pa.Table) -> list[VideoInput]:
    return [VideoInput(**row) for row in batch.to_pylist()]


def process_batch(batch: pa.Table, cfg: PreprocessConfig) -> pa.Table:
    """All stages for each input of the batch in this worker (the CPU path)."""
    landmarker, masker, identity = _worker_models(cfg)
    rows = [row for item in _items(batch) for row in process_input(item, cfg, landmarker, masker, identity)]
    return rows_table(rows)


def decode_batch(batch: pa.Table, cfg: PreprocessConfig) -> pa.Table:
    works = [decode_stage(Work(item), cfg) for item in _items(batch)]
    return pa.table({"work": pa.array([pickle.dumps(work, protocol=5) for work in works], pa.large_binary())})


class LandmarkActor:
    """Landmark stage on an actor (GPU path): the model stays loaded on its device."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg
        self.landmarker, _, self.identity = _worker_models(cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        works = [
            landmark_stage(pickle.loads(data), self.cfg, self.landmarker, self.identity)
            for data in batch["work"].to_pylist()
        ]
        return pa.table({"work": pa.array([pickle.dumps(work, protocol=5) for work in works], pa.large_binary())})


def crop_batch(batch: pa.Table, cfg: PreprocessConfig) -> pa.Table:
    from pipelines.masks import make_masker

    masker = make_masker(cfg.mask_backend, cfg.skin_threshold)
    rows = [row for data in batch["work"].to_pylist() for row in crop_stage(pickle.loads(data), cfg, masker)]
    return rows_table(rows)


def _make_sink(output_uri: str, rows_per_file: int):
    from ray.data import Datasink

    class ClipSink(Datasink):
        """Splits the stream into clip and reject part files, each written atomically."""

        def __init__(self):
            self.output = None

        @property
        def min_rows_per_write(self):
            return rows_per_file

        def write(self, blocks, ctx):
            output = self.output = self.output or Output(output_uri)
            blocks = [block for block in blocks if block.num_rows]
            if not blocks:
                return {}
            table = pa.concat_tables(blocks).cast(ROW_SCHEMA)
            written = {}
            for kind, (_, schema) in KINDS.items():
                part = table.filter(pc.equal(table.column("row_kind"), kind)).select(schema.names)
                if part.num_rows:
                    output.write_part(kind, part.cast(schema))
                written[kind] = part.num_rows
            return written

    return ClipSink()


def build_dataset(items: list[VideoInput], cfg: PreprocessConfig, args: argparse.Namespace):
    import ray
    import ray.data

    # Without this, Ray Data holds back part of the CPUs for the (tiny) write operator, which on a
    # small machine halves the number of videos processed at once.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = False
    rows = [dataclasses.asdict(item) for item in items]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    gpus = ray.cluster_resources().get("GPU", 0)
    default_actors = int(gpus) if cfg.detector == "fan" else 0
    actors = args.landmark_actors if args.landmark_actors is not None else default_actors
    common = dict(batch_size=1, batch_format="pyarrow", fn_kwargs={"cfg": cfg})
    if actors > 0:
        dataset = dataset.map_batches(decode_batch, num_cpus=args.cpus_per_task, **common)
        dataset = dataset.map_batches(
            LandmarkActor,
            batch_size=1,
            batch_format="pyarrow",
            fn_constructor_kwargs={"cfg": cfg},
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0.5,
        )
        return dataset.map_batches(crop_batch, num_cpus=args.cpus_per_task, **common)
    return dataset.map_batches(process_batch, num_cpus=args.cpus_per_task, **common)


def start_ray(args: argparse.Namespace) -> bool:
    """Connect to the given cluster or start a local one; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # Local workers must import this checkout's pipelines package, whatever their working directory.
        python_path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        ray.init(
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": python_path}},
        )
    return True


# Summary -----------------------------------------------------------------------------------------
def format_summary(summary: dict) -> str:
    lines = [
        f"preprocess {PIPELINE_VERSION}: {summary['inputs']} inputs = {summary['accepted_inputs']} accepted"
        f" + {summary['rejected_inputs']} rejected ({'balanced' if summary['balanced'] else 'NOT BALANCED'})",
        f"  clip rows {summary['clip_rows']:>8}   frames {summary['frames']:>9}",
        f"  this run: {summary['run']['inputs_processed']} inputs processed, {summary['run']['inputs_skipped']}"
        f" already done, {summary['run']['frames']} frames in {summary['run']['seconds']:.1f} s"
        f" ({summary['run']['frames_per_second']:.1f} frames/s)",
    ]
    for reason, count in summary["rejects_by_reason"].items():
        lines.append(f"  rejected {reason:<12} {count:>6}")
    if summary["duplicate_clip_rows"] or summary["accepted_and_rejected"]:
        lines.append(f"  DUPLICATES: {summary['duplicate_clip_rows']} clip rows, {summary['accepted_and_rejected']} both")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        items = discover_inputs(args.input)
        output = Output(args.output)
        output.check_settings(cfg.output_settings())
    except (ValueError, OSError) as error:  # bad settings, InputError, OutputError, unreachable filesystem
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 2
    done = output.prepare_resume()
    todo = _largest_first([item for item in items if item.input_id not in done])
    before = set(output.part_files("clip"))
    try:
        startup, seconds = _execute(todo, cfg, args) if todo else (0.0, 0.0)
    except RayUnavailable as error:
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 2
    new_files = [path for path in output.part_files("clip") if path not in before]
    frames = sum(_frames(output, path) for path in new_files)
    summary = output.summary([item.input_id for item in items])
    summary["run"] = {
        "inputs_processed": len(todo),
        "inputs_skipped": len(items) - len(todo),
        "frames": frames,
        "ray_startup_seconds": round(startup, 3),
        "seconds": round(seconds, 3),  # the dataset's execution, from the first task to the last write
        "frames_per_second": frames / seconds if seconds > 0 else 0.0,
        "settings": json.loads(cfg.to_json()),
    }
    output.write_summary(summary)
    print(format_summary(summary))
    return 0 if summary["balanced"] and not summary["duplicate_clip_rows"] else 1


def _largest_first(items: list[VideoInput]) -> list[VideoInput]:
    """Local files biggest first, so that long videos do not start last and finish alone (the tasks
    are whole videos); other inputs keep their order after them."""

    def size(item: VideoInput) -> int:
        try:
            return os.path.getsize(item.path) if "://" not in item.path else -1
        except OSError:
            return -1

    return sorted(items, key=lambda item: -size(item))


def _execute(todo: list[VideoInput], cfg: PreprocessConfig, args: argparse.Namespace) -> tuple[float, float]:
    """Run the dataset; (seconds to start or join Ray, seconds of execution)."""
    started = time.monotonic()
    try:
        started_ray = start_ray(args)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        raise RayUnavailable(f"cannot start or reach Ray ({args.address or 'local'}): {error}") from error
    running = time.monotonic()
    try:
        # Its own (small) CPU share keeps the write out of the per-video tasks, so that it bundles the
        # rows of many videos into one part file without serialising the videos into one task.
        build_dataset(todo, cfg, args).write_datasink(
            _make_sink(args.output, cfg.rows_per_file), ray_remote_args={"num_cpus": 0.25}
        )
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return running - started, time.monotonic() - running


def _frames(output: Output, path: str) -> int:
    return int(pc.sum(pq.read_table(path, columns=["num_frames"], filesystem=output.fs).column("num_frames")).as_py())


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
