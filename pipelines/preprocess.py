"""`make preprocess`: talking-head videos -> sharded Parquet face clips, as a streaming Ray Data job.

    python -m pipelines.preprocess --input "$(python -m cest.assets dir voxceleb_sample)" --output data/clips

Without --address (and without RAY_ADDRESS, which `ray job submit` sets) it starts an embedded local
Ray. Stages, all in one process per input and streaming (frames never go through the object store):
decode -> face landmarks + tracking -> crop, mask, encode -> Parquet. They run in CPU tasks, or, with
the fan detector on GPUs (--device cuda, or auto on a cluster with GPUs at start) or with
--landmark-actors, on an autoscaling pool of actors that keep the landmark model loaded, several
sharing each GPU (`landmark_layout`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

from cest.assets import AssetError
from pipelines import PIPELINE_VERSION
from pipelines.config import DETECTORS, PreprocessConfig
from pipelines.landmarks import fetch_model_files
from pipelines.inputs import (
    LISTING_BATCH,
    InputSource,
    VideoInput,
    input_source,
    manifest_batch,
    manifest_csv_options,
    resolve,
    resolve_batch,
    walk_tree,
)
from pipelines.output import Output
from pipelines.stages import RESULT_SCHEMA, input_rows, results_table, write_rows

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Ray Data's scheduling loop fetches each finished task's block metadata inline instead of on its
# background thread, whose own 0.1 s wait delayed the next input's task: a worker idled 0.15 s between
# inputs, 0.06 s inline (2 CPUs, whole sample clips: 4.2 -> 1.6 s idle, 7% more frames/s; docs/preprocess.md).
# The outputs here are a few result rows, so the inline fetch never blocks the loop for long. Read when
# ray.data is first imported (this module imports it lazily); an explicit setting wins.
os.environ.setdefault("RAY_DATA_METADATA_PREFETCH_ON_THREAD", "0")


class RayUnavailable(RuntimeError):
    pass


class ClusterTooSmall(RuntimeError):
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
        type=actor_pool_bounds,
        metavar="MAX|MIN,MAX",
        help="run the stages on an autoscaling pool of 1..MAX (or MIN..MAX) actors that keep the landmark model "
        "loaded; for --detector fan with --device cuda 1/--actors-per-gpu of a GPU each, also when the cluster "
        "has none yet (the autoscaler adds GPU nodes). Default: fan with --device cuda: 1 to unbounded GPU "
        "actors; fan with --device auto: --actors-per-gpu per GPU the cluster has at start, or FAN on CPU in "
        "tasks when it has none; otherwise CPU tasks",
    )
    parser.add_argument(
        "--actors-per-gpu",
        type=positive_int,
        default=8,
        help="GPU actors sharing one GPU (each runs decode, crop and mask on its CPU between batches of FAN)",
    )
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default=defaults.detector,
        help="landmark backend: mediapipe (face mesh on LiteRT, offline, CPU; holds at profile), dlib (HOG + "
        "68-point model, offline, CPU; frontal faces), fan (face-alignment; weights downloaded on first use)",
    )
    parser.add_argument(
        "--device",
        default=defaults.device,
        help="fan only: auto | cpu | cuda (cuda: GPU actors, see --landmark-actors)",
    )
    parser.add_argument(
        "--fan-face-detector", default=defaults.fan_face_detector, help="fan only: face_alignment detector module"
    )
    parser.add_argument(
        "--dlib-cnn-fallback",
        action="store_true",
        help="dlib only: run dlib's CNN face detector where HOG finds no face (finds more turned faces, whose "
        "68 landmarks are poor past 30 degrees of yaw; about 30x HOG's CPU on each frame HOG misses)",
    )
    parser.add_argument("--no-tracking", action="store_true", help="detect on every frame instead of tracking")
    parser.add_argument(
        "--redo-rejects",
        action="store_true",
        help="process the inputs an earlier run rejected again, e.g. after an upgrade (0.3.1 turns rotated phone "
        "videos upright, which 0.3.0 rejected as no_face); a reject becomes clips or an updated reject",
    )
    parser.add_argument(
        "--all-faces", action="store_true", help="keep tracks of every person, not only the clip's primary face"
    )
    parser.add_argument(
        "--recentre-tolerance",
        type=float,
        default=defaults.recentre_tolerance,
        help="tracking: run the landmarks again on a box centred on them when they land more than this "
        "fraction of the box size from the guessed box (0: always; outputs before 0.3 were made with 0)",
    )
    parser.add_argument(
        "--track-window", type=int, default=defaults.track_window, help="tracking: frames per FAN batch"
    )
    parser.add_argument(
        "--mask-memory",
        type=float,
        nargs=2,
        metavar=("BOUNDARY", "PIXEL"),
        default=(defaults.mask_boundary_memory, defaults.mask_pixel_memory),
        help="weights of a segment's previous frames in the mask's upper boundary and in each pixel's skin "
        "distance (0 0: each frame on its own, as outputs before 0.3)",
    )
    parser.add_argument(
        "--mask-dark-tolerance",
        type=float,
        default=defaults.mask_dark_tolerance,
        help="pixels darker than the cheeks by more than this many robust deviations are not skin "
        "(0: chroma only, as outputs before 0.3)",
    )
    parser.add_argument("--decoder", choices=("pyav", "decord"), default=defaults.decoder)
    parser.add_argument("--frame-stride", type=int, default=defaults.frame_stride)
    parser.add_argument("--max-frames", type=int, default=defaults.max_frames, help="per video, 0: all")
    parser.add_argument("--max-side", type=int, default=defaults.max_side, help="working frame size bound (px)")
    parser.add_argument("--decode-timeout", type=float, default=defaults.decode_timeout_s, help="seconds per video")
    parser.add_argument("--min-segment-frames", type=int, default=defaults.min_segment_frames)
    parser.add_argument("--max-segment-frames", type=int, default=defaults.max_segment_frames)
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def actor_pool_bounds(text: str) -> tuple[int, int]:
    """--landmark-actors: "MAX" -> (1, MAX), "MIN,MAX" -> (MIN, MAX), with 1 <= MIN <= MAX."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    bounds = (1, numbers[0]) if len(numbers) == 1 else tuple(numbers)
    if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected MAX or MIN,MAX with 1 <= MIN <= MAX, got {text!r}")
    return bounds


LISTING_CPUS = 1.0  # the listing tasks' share (see resolved_inputs)


def landmark_layout(
    detector: str,
    device: str,
    landmark_actors: tuple[int, int] | None,
    cluster_gpus: float,
    actors_per_gpu: int = 8,
    cpus_per_actor: float = 1.0,
    cluster_cpus: float | None = None,
) -> tuple[dict | None, str]:
    """Where the stages run: (map_batches keyword arguments of the actor pool, or None when they run in
    CPU tasks; one line saying where the landmarks run and why).

    FAN with --device cuda asks for GPU actors whatever the cluster has now: an autoscaling cluster
    that starts without GPUs adds GPU nodes for them (sizing from the GPUs at start ran FAN on CPU
    there). --device auto uses the GPUs the cluster has at start; dlib, and FAN on --device cpu, use
    CPU actors when --landmark-actors asks for a pool. A GPU actor runs every stage of its inputs, so
    most of its time goes to CPU work between FAN batches: `actors_per_gpu` of them share a GPU; sized
    from the cluster at start (--device auto), the pool leaves one of `cluster_cpus` to the listing that
    feeds it (8 actors of 1 CPU on an 8-core machine with one GPU would hold every CPU and never get an
    input, as `--landmark-actors 2,2` did on 2 CPUs)."""
    import ray.data

    gpu_actors = detector == "fan" and (device.startswith("cuda") or (device == "auto" and cluster_gpus > 0))
    fit = ""  # why a pool sized from the cluster at start is smaller than its GPUs would take
    if landmark_actors is not None:
        bounds = landmark_actors
    elif detector == "fan" and device.startswith("cuda"):
        bounds = (1, None)  # unbounded: as many as the cluster (and its autoscaler's limits) gives
    elif gpu_actors:
        wanted = max(1, int(cluster_gpus)) * actors_per_gpu
        room = wanted if cluster_cpus is None else int((cluster_cpus - LISTING_CPUS) // cpus_per_actor)
        bounds = (max(1, min(wanted, room)),) * 2
        fit = f", CPUs for {bounds[0]} of {wanted} actors beside the listing" if bounds[0] < wanted else ""
    else:
        bounds = None
    if detector != "fan":
        why = f"{detector} runs on CPU"
    elif device.startswith("cuda"):
        why = f"--device {device}: 1/{actors_per_gpu} GPU per actor, asked of the cluster, which has {cluster_gpus:g} now"
    elif device == "cpu":
        why = "--device cpu"
    elif cluster_gpus > 0:
        why = f"--device auto and the cluster has {cluster_gpus:g} GPUs at start{fit}"
    else:
        why = "--device auto and the cluster has no GPUs at start; --device cuda asks the autoscaler for GPU nodes"
    if bounds is None:
        return None, f"landmarks ({detector}) on CPU in tasks ({why})"
    arguments = dict(
        compute=ray.data.ActorPoolStrategy(min_size=bounds[0], max_size=bounds[1]),
        num_gpus=1 / actors_per_gpu if gpu_actors else 0,
        num_cpus=cpus_per_actor,
    )
    pool = f"{bounds[0]}..{bounds[1] if bounds[1] is not None else 'unbounded'}"
    return arguments, f"landmarks ({detector}) on {pool} {'GPU' if gpu_actors else 'CPU'} actors ({why})"


def resource_problem(actor_pool: dict | None, cpus_per_task: float, cluster_cpus: float, cluster_gpus: float) -> str:
    """Why the job could never start on a cluster of this size ("" when it can): Ray would wait for
    resources forever. The actor pool starts its minimum size at once and holds those CPUs, so the
    listing that feeds the actors needs one CPU beside them."""
    if actor_pool is None:
        if cpus_per_task > cluster_cpus:
            return f"--cpus-per-task {cpus_per_task:g} is more than the cluster's {cluster_cpus:g} CPUs"
        return ""
    actors = actor_pool["compute"].min_size
    if actors * actor_pool["num_cpus"] > cluster_cpus - LISTING_CPUS:
        return (
            f"{actors} landmark actors x {actor_pool['num_cpus']:g} CPUs leave the listing less than "
            f"{LISTING_CPUS:g} of the cluster's {cluster_cpus:g} CPUs (the actors would wait for inputs forever): "
            "lower the MIN of --landmark-actors or --cpus-per-task"
        )
    if actor_pool["num_gpus"] and not cluster_gpus:
        return "GPU actors (FAN on --device cuda) need GPUs and the cluster has none: use --device auto or cpu"
    if actors * actor_pool["num_gpus"] > cluster_gpus:
        return (
            f"{actors} landmark actors x {actor_pool['num_gpus']:g} GPU need more than the cluster's "
            f"{cluster_gpus:g} GPUs: lower the MIN of --landmark-actors, raise --actors-per-gpu, or use --device cpu"
        )
    return ""


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    return PreprocessConfig(
        detector=args.detector,
        device=args.device,
        fan_face_detector=args.fan_face_detector,
        dlib_cnn_fallback=args.dlib_cnn_fallback,
        tracking=not args.no_tracking,
        recentre_tolerance=args.recentre_tolerance,
        track_window=args.track_window,
        mask_boundary_memory=args.mask_memory[0],
        mask_pixel_memory=args.mask_memory[1],
        mask_dark_tolerance=args.mask_dark_tolerance,
        primary_face_only=not args.all_faces,
        decoder=args.decoder,
        frame_stride=args.frame_stride,
        max_frames=args.max_frames,
        max_side=args.max_side,
        decode_timeout_s=args.decode_timeout,
        min_segment_frames=args.min_segment_frames,
        max_segment_frames=args.max_segment_frames,
    )


# Ray Data functions ------------------------------------------------------------------------------
_WORKER_CACHE: dict = {}


def _worker_models(cfg: PreprocessConfig):
    """(landmarker, masker, identity or None); the models load once per worker process (Ray reuses
    workers across tasks)."""
    from pipelines.identity import FaceIdentity
    from pipelines.landmarks import make_landmarker
    from pipelines.masks import make_masker, mask_options

    key = (
        cfg.detector, cfg.device, cfg.fan_face_detector, cfg.dlib_upsample, cfg.dlib_cnn_fallback, cfg.dlib_cnn_upsample
    )
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = make_landmarker(cfg)
    if cfg.primary_face_only and "identity" not in _WORKER_CACHE:
        _WORKER_CACHE["identity"] = FaceIdentity()
    identity = _WORKER_CACHE["identity"] if cfg.primary_face_only else None
    return _WORKER_CACHE[key], make_masker(cfg.mask_backend, cfg.skin_threshold, **mask_options(cfg)), identity


def _output(uri: str) -> Output:
    if ("output", uri) not in _WORKER_CACHE:
        _WORKER_CACHE["output", uri] = Output(uri)
    return _WORKER_CACHE["output", uri]


def list_tree(batch: pa.Table):
    """Listing task: every media file under each root of the batch, in batches."""
    for root in batch.column("root").to_pylist():
        yield from walk_tree(root)


def resolve_and_skip(batch: pa.Table, base: str, output_uri: str, redo_rejects: bool = False) -> pa.Table:
    """Listing rows -> the inputs still to do, plus one row carrying the ids of those already done."""
    items, output = resolve_batch(batch, base), _output(output_uri)
    if redo_rejects:
        output.withdraw_rejects([item.input_id for item in items])
    done = output.done([item.input_id for item in items])
    rows = [dict(dataclasses.asdict(item), done_ids=[]) for item, finished in zip(items, done) if not finished]
    finished_ids = [item.input_id for item, finished in zip(items, done) if finished]
    if finished_ids:
        rows.append(dict(input_id="", path="", speaker_id="", video_id="", clip_id="", done_ids=finished_ids))
    return pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)


INPUT_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("input_id", "path", "speaker_id", "video_id", "clip_id")]
    + [("done_ids", pa.list_(pa.string()))]
)


def _done_result(row: dict) -> dict:
    return dict(input_id="", status="done", reason="", num_rows=0, num_frames=0, done_ids=row["done_ids"])


def _item(row: dict) -> VideoInput:
    return VideoInput(**{key: value for key, value in row.items() if key != "done_ids"})


def process_batch(batch: pa.Table, cfg: PreprocessConfig, output_uri: str) -> pa.Table:
    """All stages for each input of the batch in this worker (the CPU path); rows go to the output."""
    landmarker, masker, identity = _worker_models(cfg)
    results = []
    for row in batch.to_pylist():
        if not row["input_id"]:
            results.append(_done_result(row))
            continue
        item = _item(row)
        results.append(write_rows(item, input_rows(item, cfg, landmarker, masker, identity), _output(output_uri)))
    return results_table(results)


class InputActor:
    """Every stage of each input, on an actor of the pool: the landmark model loads once, on the actor's
    device (its share of a GPU for FAN)."""

    def __init__(self, cfg: PreprocessConfig, output_uri: str):
        self.cfg, self.output_uri = cfg, output_uri
        _worker_models(cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return process_batch(batch, self.cfg, self.output_uri)


def input_dataset(source: InputSource, output_uri: str, redo_rejects: bool = False):
    """The stream of inputs still to do, one per block (so that each is its own task)."""
    return resolved_inputs(source, output_uri, redo_rejects).repartition(target_num_rows_per_block=1)


def resolved_inputs(source: InputSource, output_uri: str, redo_rejects: bool = False):
    """The inputs still to do, listed and resolved in tasks, in batches (the driver only plans)."""
    import ray.data

    if source.kind == "tree":
        listing = ray.data.from_items([{"root": source.location}]).map_batches(
            list_tree, batch_format="pyarrow", batch_size=None
        )
    elif source.kind == "manifest":
        fs, path = resolve(source.uri)
        if path.lower().endswith(".csv"):
            raw = ray.data.read_csv(path, filesystem=fs, convert_options=manifest_csv_options())
        else:
            raw = ray.data.read_parquet(path, filesystem=fs)
        listing = raw.map_batches(manifest_batch, batch_format="pyarrow", batch_size=None)
    else:
        listing = ray.data.from_items([{"path": source.location, "speaker_id": "", "video_id": "", "clip_id": ""}])
    # Default resources (one CPU per task), like Ray Data's repartition after it: the two then fuse
    # into short tasks. With a smaller CPU share they do not fuse, and the repartition's long-lived
    # task holds one of the CPUs while it waits for the processing stage (measured: 2 CPUs ran one
    # video at a time).
    return listing.map_batches(
        resolve_and_skip,
        batch_format="pyarrow",
        batch_size=LISTING_BATCH,
        fn_kwargs={"base": source.base, "output_uri": output_uri, "redo_rejects": redo_rejects},
    )


def build_dataset(source: InputSource, cfg: PreprocessConfig, args: argparse.Namespace, fixed_cluster: bool):
    """The job's dataset. On a `fixed_cluster` (the embedded local Ray) a layout that could never start
    raises ClusterTooSmall; on another cluster it is a warning, since its autoscaler may add nodes."""
    import ray
    import ray.data

    dataset = input_dataset(source, args.output, args.redo_rejects)
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    actor_pool, where = landmark_layout(
        cfg.detector, cfg.device, args.landmark_actors, gpus, args.actors_per_gpu, args.cpus_per_task, cpus
    )
    if cfg.detector == "fan":
        print(f"preprocess: {where}", file=sys.stderr)
    problem = resource_problem(actor_pool, args.cpus_per_task, cpus, gpus)
    if problem and fixed_cluster:
        raise ClusterTooSmall(problem)
    if problem:
        print(f"preprocess: warning: {problem}; waiting for the cluster's autoscaler to add nodes", file=sys.stderr)
    if actor_pool is not None:
        return dataset.map_batches(
            InputActor,
            batch_size=1,
            batch_format="pyarrow",
            fn_constructor_kwargs={"cfg": cfg, "output_uri": args.output},
            **actor_pool,
        )
    return dataset.map_batches(
        process_batch,
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=args.cpus_per_task,
        fn_kwargs={"cfg": cfg, "output_uri": args.output},
    )


def cluster_address(args: argparse.Namespace) -> str | None:
    """The cluster to join (--address, else RAY_ADDRESS as `ray job submit` sets it); None: embedded local Ray."""
    return args.address or os.environ.get("RAY_ADDRESS") or None


def start_ray(args: argparse.Namespace) -> bool:
    """Connect to the given cluster or start a local one; True when this call started Ray.
    The embedded default is address="local": a new Ray for this job, never a stray cluster that
    happens to run on the same machine."""
    import ray

    if ray.is_initialized():
        return False
    address = cluster_address(args)
    if address:
        ray.init(address=address)
    else:
        init_local_ray(args.num_cpus, args.num_gpus)
    return True


def init_local_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start an embedded local Ray whose workers import this checkout's pipelines package, whatever their
    working directory: its processes inherit PYTHONPATH from this one's environment while it starts. (A
    job runtime_env with the same PYTHONPATH makes Ray start each worker through its runtime-env agent:
    1.0 s against 0.3 s from a task's submission to its start on a fresh worker here, paid by every task
    worker and by Ray Data's own actors.)"""
    import ray

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, saved]))
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


# Summary -----------------------------------------------------------------------------------------
def format_summary(summary: dict) -> str:
    lines = [
        f"preprocess {PIPELINE_VERSION}: {summary['inputs']} inputs = {summary['accepted_inputs']} accepted"
        f" + {summary['rejected_inputs']} rejected + {summary['retry_inputs']} to retry"
        f" ({'balanced' if summary['balanced'] else 'NOT BALANCED'})",
        f"  clip rows {summary['clip_rows']:>8}   frames {summary['frames']:>9}",
        f"  this run: {summary['run']['inputs_processed']} inputs processed, {summary['run']['inputs_skipped']}"
        f" already done, {summary['run']['frames']} frames in {summary['run']['seconds']:.1f} s"
        f" ({summary['run']['frames_per_second']:.1f} frames/s)",
    ]
    for reason, count in summary["rejects_by_reason"].items():
        lines.append(f"  rejected {reason:<12} {count:>6}")
    for reason, count in summary["retry_by_reason"].items():
        lines.append(f"  to retry {reason:<12} {count:>6}   (transient: processed again by the next run)")
    if summary["duplicate_clip_rows"] or summary["accepted_and_rejected"]:
        lines.append(f"  DUPLICATES: {summary['duplicate_clip_rows']} clip rows, {summary['accepted_and_rejected']} both")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        source = input_source(args.input)
        output = Output(args.output)
        output.check_settings(cfg.output_settings(), defaults=PreprocessConfig.settings_of_older_outputs())
        output.remove_stale_temporaries()
        fetch_model_files(cfg.detector)
    except (ValueError, OSError, AssetError) as error:  # bad settings, Input/OutputError, filesystem, model file
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 2
    try:
        results, startup, seconds = _execute(source, cfg, args)
    except (RayUnavailable, ClusterTooSmall) as error:
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 2
    ids = pa.concat_arrays(
        [results.column("input_id").combine_chunks(), pc.list_flatten(results.column("done_ids")).combine_chunks()]
    )
    ids = ids.filter(pc.not_equal(ids, ""))
    if len(ids) == 0:
        print(f"preprocess: error: no videos or images found under {args.input}", file=sys.stderr)
        return 2
    processed = results.filter(pc.not_equal(results.column("status"), "done"))
    frames = int(pc.sum(processed.column("num_frames")).as_py() or 0)
    summary = output.summary(ids)
    summary["run"] = {
        "inputs_processed": processed.num_rows,
        "inputs_skipped": len(ids) - processed.num_rows,
        "frames": frames,
        "ray_startup_seconds": round(startup, 3),
        "seconds": round(seconds, 3),  # the dataset's execution, from the first task to the last write
        "frames_per_second": frames / seconds if seconds > 0 else 0.0,
        "settings": json.loads(cfg.to_json()),
    }
    output.write_summary(summary)
    print(format_summary(summary))
    return 0 if summary["balanced"] and not summary["duplicate_clip_rows"] else 1


def _execute(source: InputSource, cfg: PreprocessConfig, args: argparse.Namespace) -> tuple[pa.Table, float, float]:
    """Run the dataset; (result rows, seconds to start or join Ray, seconds of execution)."""
    started = time.monotonic()
    try:
        started_ray = start_ray(args)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        raise RayUnavailable(f"cannot start or reach Ray ({args.address or 'local'}): {error}") from error
    running = time.monotonic()
    try:
        fixed_cluster = started_ray and cluster_address(args) is None  # the embedded local Ray
        batches = build_dataset(source, cfg, args, fixed_cluster).iter_batches(batch_size=None, batch_format="pyarrow")
        results = pa.concat_tables([RESULT_SCHEMA.empty_table()] + [batch.cast(RESULT_SCHEMA) for batch in batches])
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return results, running - started, time.monotonic() - running


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
