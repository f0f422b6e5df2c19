"""Train CEST (or IEST, or an ablation) on the clips of `make preprocess`, with Ray Train, Ray Data and MLflow.

    python jobs/train.py --data data/clips --config jobs/configs/cpu_demo.yaml --steps 200 --name demo
    ray job submit --working-dir . -- python jobs/train.py --data s3://bucket/clips \\
        --config jobs/configs/voxceleb.yaml --workers 8 --gpus-per-worker 1 --storage s3://bucket/runs --name cest

The training loop (`train_worker`) is a plain function of the job description and a worker context: Ray
Train runs it in every worker of a `TorchTrainer` (`--workers N`, DDP: gloo on CPU, NCCL on GPU); with
`--workers 0` it runs in this process, on the same Ray Data ingest (jobs/data.py). Checkpoints go to
STORAGE/NAME every `train.checkpoint_every` steps (cest.checkpoint format); a worker that dies restarts the
group from the last one (`--max-failures`), and the same command with the same --name resumes from it
("resuming NAME from step N"); `--fresh` starts over under an existing name, deleting its checkpoints.
`--start-from CHECKPOINT` starts a new run from another run's checkpoint (weights, optimiser, step, random state),
copied into STORAGE/NAME: the ablations of a recipe share its landmark warm-up that way (docs/training.md).

MLflow (jobs/tracking.py): the driver opens one run per training run before any worker starts and records
its id in STORAGE/NAME/run.json, so restarts and resumes continue that run; rank 0 logs the loss terms,
images/s, the share of time spent waiting for data, the degeneracy measures, image grids of held-apart
frames and system metrics; the driver logs the resolved config and the final checkpoint.

Bad data (jobs/data_errors.py): clip files that fail their footer checks are skipped before any worker starts
(one error line instead when they alone pass data.max_skipped_fraction, or when nothing is readable); rows that
cannot give a sample are skipped by the ingest. Every skip is named once and listed in STORAGE/NAME/skipped.jsonl
by the job's SkipList (a Ray actor); rank 0 reads its count every train.log_every steps (train/skipped_samples)
and, when the share passes the bound, every rank stops and the job ends with one error line (exit status 2).
"""

import argparse
import json
import math
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python jobs/train.py`: make the project importable like `python -m jobs.train`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow.fs

from cest.checkpoint import META_NAME, CheckpointError, checkpoint_file, load_checkpoint
from cest.config import Config, config_from_dict, config_to_dict, load_config, save_config
from jobs import tracking
from jobs.data import (DataError, OverlappedPasses, SkipReporter, holdout_rows, mixed_batches, parse_source,
                       skip_status, start_skip_registry, to_batch, training_corpus, training_dataset)
from jobs.data_errors import SKIP_FILE, SkipList, files_verdict
from pipelines.inputs import resolve

DEFAULT_STORAGE = tracking.PROJECT_ROOT / "runs"
RUN_FILE = "run.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# CPUs left to Ray Data's decoding tasks: with none, the training workers wait forever for batches.
DATA_CPUS = 1


class JobError(ValueError):
    """A bad argument, path or configuration: reported as one line, before any worker starts."""


@dataclass
class Job:
    """Everything a worker needs, as plain values (it travels to the Ray workers)."""

    config: dict
    data: list  # [path or URI, weight] per source; the first also gives the held-apart clips
    name: str
    run_dir: str  # STORAGE/NAME, a local path or URI
    tracking_uri: str
    mlflow_run_id: str
    resume_from: str | None = None  # checkpoint directory to start from when Ray has none for this run
    holdout: list = field(default_factory=list)  # [file, segment key] of the held-apart rows of the first source
    workers: int = 0
    gpus_per_worker: float = 0
    crash_once_at_step: int = 0  # fault drill: the last rank exits hard at this step, once per run (0: never)
    synthetic_test: str | None = None  # a held-apart synthetic set scored every train.image_every steps
    skip_registry: str | None = None  # the name of the job's SkipRegistry actor (jobs.data)


# ----------------------------------------------------------------------------------------------- storage


def storage_path(root: str, *parts: str) -> str:
    """A path under a storage root: a local directory or a URI (s3://, gs://, ...)."""
    return posixpath.join(root, *parts) if "://" in root else str(Path(root, *parts))


def latest_checkpoint(run_dir: str) -> tuple[str, int] | None:
    """(checkpoint directory, step) of the newest checkpoint under STORAGE/NAME, or None."""
    fs, root = resolve(run_dir)
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        return None
    best = None
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root)):
        meta = posixpath.join(info.path, META_NAME)
        if info.type != pyarrow.fs.FileType.Directory or fs.get_file_info(meta).type != pyarrow.fs.FileType.File:
            continue
        with fs.open_input_stream(meta) as stream:
            step = json.loads(stream.read())["step"]
        if best is None or step > best[1]:
            best = (storage_path(run_dir, info.base_name), step)
    return best


def read_run_file(run_dir: str) -> dict | None:
    fs, root = resolve(run_dir)
    path = posixpath.join(root, RUN_FILE)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())


def write_run_file(run_dir: str, values: dict) -> None:
    fs, root = resolve(run_dir)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(posixpath.join(root, RUN_FILE)) as stream:
        stream.write(json.dumps(values, indent=1).encode())


def copy_start(directory: Path, step: int, run_dir: str) -> str:
    """--start-from: a copy of a local checkpoint directory in STORAGE/NAME, from which the run then resumes
    as from its own (workers on other nodes read the run's storage, not this machine's disk)."""
    fs, root = resolve(run_dir)
    name = f"checkpoint_{step:08d}"
    fs.create_dir(posixpath.join(root, name), recursive=True)
    pyarrow.fs.copy_files(str(directory), posixpath.join(root, name),
                          source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    return storage_path(run_dir, name)


def fetch_checkpoint(directory: str, into: str) -> str:
    """A local copy of a checkpoint directory (local paths are used where they are)."""
    if "://" not in directory:
        return directory
    fs, path = resolve(directory)
    local = pyarrow.fs.LocalFileSystem()
    pyarrow.fs.copy_files(path, into, source_filesystem=fs, destination_filesystem=local)
    return into


# ------------------------------------------------------------------------------------------ the worker


def pass_starters(datasets: list, clips: int, buffer: int) -> list:
    """Per dataset (or dataset shard), a callable that starts a pass over it: an iterator of batches of
    `clips` samples (one source drops a last short batch; mixed sources combine theirs)."""
    def one_pass(dataset):
        return lambda: dataset.iter_batches(batch_size=clips, batch_format="numpy", drop_last=len(datasets) == 1,
                                            local_shuffle_buffer_size=buffer or None)

    return [one_pass(dataset) for dataset in datasets]


def source_batches(passes: list, weights: list[float], clips: int, seed: int):
    """A pass of batches from one source, or endless batches mixed from several by weight
    (jobs.data.mixed_batches); `passes` as `pass_starters` gives them."""
    if len(passes) == 1:
        return passes[0]()
    return mixed_batches(passes, weights, clips, np.random.default_rng(seed))


class LocalContext:
    """The worker context of a `--workers 0` run: this process, rank 0 of 1, checkpoints kept by hand."""

    rank, world_size = 0, 1
    keep = 2

    def __init__(self, job: Job, datasets: list, device: str):
        self.job, self.datasets, self.device = job, datasets, device
        self._passes = {}

    def batches(self, clips: int, buffer: int, seed: int):
        # Each pass opens while the one before is read (jobs.data.OverlappedPasses): in one process nothing
        # ties passes together, unlike Ray Train's shards, whose epochs start on every worker at once.
        if (clips, buffer) not in self._passes:
            self._passes[(clips, buffer)] = [OverlappedPasses(start)
                                             for start in pass_starters(self.datasets, clips, buffer)]
        return source_batches(self._passes[(clips, buffer)], [weight for _, weight in self.job.data], clips, seed)

    def close(self) -> None:
        for passes in self._passes.values():
            for upcoming in passes:
                upcoming.close()

    def prepare(self, model, find_unused_parameters: bool = False):
        return model.to(self.device)

    def agree(self, flag: bool) -> bool:
        return flag

    def restored_checkpoint(self):
        return None

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir is None:
            return
        target = Path(self.job.run_dir) / f"checkpoint_{metrics['step']:08d}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(checkpoint_dir, target)
        old = sorted(Path(self.job.run_dir).glob("checkpoint_*"))[: -self.keep]
        for directory in old:
            shutil.rmtree(directory)


class RayContext:
    """The worker context inside Ray Train: rank, device, dataset shard, reports and checkpoints."""

    def __init__(self, job: Job):
        import ray.train
        import ray.train.torch

        self._train = ray.train
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.weights = [weight for _, weight in job.data]
        self.shards = [ray.train.get_dataset_shard(f"train_{k}") for k in range(len(self.weights))]

    def batches(self, clips: int, buffer: int, seed: int):
        return source_batches(pass_starters(self.shards, clips, buffer), self.weights, clips, seed + 7919 * self.rank)

    def prepare(self, model, find_unused_parameters: bool = False):
        import ray.train.torch

        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters})

    def restored_checkpoint(self):
        return self._train.get_checkpoint()

    def agree(self, flag: bool) -> bool:
        """Rank 0's flag on every rank (a broadcast in the training process group), so that all stop together."""
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        checkpoint = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(job: dict) -> None:
    """Ray Train's entry point: the plain loop in a Ray worker context."""
    job = Job(**job)
    train_worker(job, RayContext(job))


def _load_start(context, job: Job, device) -> dict | None:
    """The checkpoint to start from: Ray's latest for this run (after a restart), else the resume point."""
    restored = context.restored_checkpoint()
    if restored is not None:
        with restored.as_directory() as directory:
            return load_checkpoint(directory, map_location=device)
    if job.resume_from:
        with tempfile.TemporaryDirectory() as scratch:
            return load_checkpoint(fetch_checkpoint(job.resume_from, scratch), map_location=device)
    return None


def _crash_drill(job: Job, context, step: int) -> None:
    """--crash-once-at-step: the last rank dies as a killed process would (no cleanup, exit code 1), once
    per run (a marker in the run directory), to show that the group restarts from the last checkpoint."""
    if step != job.crash_once_at_step or context.rank != context.world_size - 1:
        return
    fs, root = resolve(job.run_dir)
    marker = posixpath.join(root, "crash-drill-done")
    if fs.get_file_info(marker).type == pyarrow.fs.FileType.File:
        return
    with fs.open_output_stream(marker) as stream:
        stream.write(str(step).encode())
    print(f"rank {context.rank}: crash drill at step {step}: exiting hard", flush=True)
    os._exit(1)


def train_worker(job: Job, context) -> None:
    """The training loop: the same on every worker and without Ray. Runs until config.train.steps, or until the
    skipped share of the data passes data.max_skipped_fraction (checked every train.log_every steps)."""
    import torch

    from cest.augment import mirror_clips
    from cest.checkpoint import rng_state, save_checkpoint, set_rng_state
    from cest.model import build_model
    from cest.step import (NATIVE_BF16_FLAGS, cpu_has_native_bf16, learning_rates, make_optimizer, make_scaler,
                           set_learning_rates, train_step)
    from jobs.monitor import Monitor

    config = config_from_dict(job.config)
    schedule, data = config.train, config.data
    device = torch.device(context.device)
    torch.manual_seed(schedule.seed)
    model = build_model(config.model).to(device)
    optimizer = make_optimizer(model, config.optim)
    scaler = make_scaler(schedule.scaler_precision, device)
    if device.type == "cpu" and "bf16" in schedule.precisions and cpu_has_native_bf16() is False:
        print(f"rank {context.rank}: bf16 (train.precision / train.warmup_precision) on a CPU without native bf16 "
              f"({' or '.join(NATIVE_BF16_FLAGS)}): oneDNN emulates it, slower than float32; "
              "fp32 trains faster here", flush=True)
    step = 0
    start = _load_start(context, job, device)
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        if start["scaler"] is not None:
            scaler.load_state_dict(start["scaler"])
        step = start["step"]
        if start["rng"] is not None and context.rank == 0:
            set_rng_state(start["rng"])
        if context.rank == 0:
            print(f"rank 0: starting at step {step} from a checkpoint", flush=True)
    # The landmark warm-up leaves the reflectance and illumination networks out of the graph: DDP must expect that.
    model = context.prepare(model, find_unused_parameters=config.loss.landmark_warmup_steps > 0)
    # The pairing's draws: on the data's device, different per rank, reproducible from the step reached.
    generator = torch.Generator(device).manual_seed(schedule.seed * 1_000_003 + context.rank * 7919 + step)
    clips = data.clips_per_batch // context.world_size
    monitor = Monitor(job, config, context.world_size) if context.rank == 0 else None
    # Rank 0 asks the job's SkipRegistry (jobs.data) at every log step; every rank stops with it.
    skipped, too_much, stopped = 0, False, False

    while step < schedule.steps and not stopped:
        batches_this_epoch = 0
        waited = time.perf_counter()
        # Closed explicitly when the run ends mid-pass: left to the garbage collector, a pass's Ray Data
        # execution would be torn down after Ray itself, printing tracebacks at the end of a finished run.
        batches = iter(context.batches(clips, data.shuffle_buffer_clips, schedule.seed * 1_000_003 + step))
        for samples in batches:
            batch = mirror_clips(to_batch(samples, device), data.mirror_probability, generator)
            data_seconds = time.perf_counter() - waited
            model.train()
            rates = learning_rates(config.optim, config.loss.landmark_warmup_steps, step, schedule.steps)
            set_learning_rates(optimizer, rates)
            warming_up = step < config.loss.landmark_warmup_steps
            terms = train_step(model, optimizer, batch, config.loss, generator, schedule.step_precision(warming_up),
                               scaler, geometry_only=warming_up)
            step += 1
            batches_this_epoch += 1
            _crash_drill(job, context, step)
            checking = step % schedule.log_every == 0 or step == schedule.steps
            if checking and context.rank == 0:
                skipped, too_much = skip_status(job.skip_registry)
            if monitor is not None:
                rate_terms = {"learning_rate": rates["geometry"], "learning_rate_appearance": rates["appearance"]}
                monitor.step_done(step, terms | rate_terms, data_seconds, model, skipped)
            # After the progress line: a collective waits for every rank (one that died is seen here).
            if checking and context.agree(too_much):
                stopped = True  # the driver reports it (jobs.data_errors.SkipList.verdict)
                break
            if step % schedule.checkpoint_every == 0 or step == schedule.steps:
                with tempfile.TemporaryDirectory() as scratch:
                    if context.rank == 0:
                        save_checkpoint(scratch, model, config, step, optimizer, scaler, rng_state(), job.mlflow_run_id)
                    context.report({"step": step, "total": terms["total"]}, scratch if context.rank == 0 else None)
            if step >= schedule.steps:
                break
            waited = time.perf_counter()
        getattr(batches, "close", lambda: None)()
        # Batches that end short of the step count without a batch (one source), or at all (mixed sources, whose
        # batches end only where a source gave no sample in a whole pass: jobs.data.mixed_batches), mean data too
        # bad (the driver reports the verdict) or too small.
        mixed = len(job.data) > 1
        if not stopped and step < schedule.steps and (batches_this_epoch == 0 or mixed):
            if context.rank == 0:
                skipped, too_much = skip_status(job.skip_registry)
            if context.agree(too_much):
                break
            empty = ("a pass over one of the data sources gave no clip" if mixed
                     else f"an epoch gave no batch of {clips} clips")
            raise RuntimeError(f"{empty} with {data.frames_per_clip} frames each: the data has too few usable clips "
                               "for clips_per_batch / workers")
    if monitor is not None:
        monitor.close()


# ------------------------------------------------------------------------------------------- the driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, action="append", metavar="PATH[:WEIGHT]",
                        help="output directory (or URI) of `make preprocess` or `python -m jobs.synthetic`; repeat "
                             "to mix sources, each clip of a batch drawn from a source with its weight (default 1): "
                             "--data data/synthetic:0.5 --data data/clips:0.5")
    parser.add_argument("--config", help="YAML overrides of cest/config.py (jobs/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config value, e.g. --set loss.symmetry=false (repeatable)")
    parser.add_argument("--steps", type=int, help="training steps (default: train.steps of the config)")
    parser.add_argument("--workers", type=int, default=0, help="Ray Train workers; 0 = train in this process")
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--cpus-per-worker", type=float, default=1,
                        help="CPUs each worker reserves (fractions allowed); Ray Data keeps the rest")
    parser.add_argument("--placement-strategy", default="PACK", choices=("PACK", "SPREAD", "STRICT_SPREAD"),
                        help="how Ray places the workers: PACK fills nodes, SPREAD one per node where it can")
    parser.add_argument("--name", required=True, help="run name: checkpoints in STORAGE/NAME; reusing it resumes")
    parser.add_argument("--storage", default=str(DEFAULT_STORAGE), help="absolute directory or URI for runs")
    parser.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--fresh", action="store_true", help="start over under an existing name (deletes it)")
    parser.add_argument("--start-from", metavar="CHECKPOINT",
                        help="start a new run from another run's checkpoint (a checkpoint directory or file, or a "
                             "run directory for its latest): weights, optimiser, step and random state; the model "
                             "config must be the same, losses, data and schedule may differ (e.g. ablations sharing "
                             "a landmark warm-up); ignored once the run has checkpoints of its own")
    parser.add_argument("--max-failures", type=int, default=3, help="worker-group restarts before giving up")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--crash-once-at-step", type=int, default=0, metavar="STEP",
                        help="fault drill: one worker exits hard at STEP, once per run, to check recovery")
    parser.add_argument("--synthetic-test", metavar="DIR",
                        help="a held-apart synthetic set (python -m jobs.synthetic, other seed): its ground-truth "
                             "metrics are logged as synthetic/* every train.image_every steps (learning curves)")
    parser.add_argument("--ablation", default="none", help="ablation name tag (jobs/ablations.py sets it)")
    parser.add_argument("--parent-run-id", help="MLflow parent run (jobs/ablations.py sets it)")
    return parser.parse_args(argv)


def load_job_config(path: str | None, overrides: list[str]) -> Config:
    """The configuration of a job (defaults, YAML file, --set overrides); JobError with one line if it is bad."""
    try:
        return load_config(path, overrides)
    except FileNotFoundError:
        raise JobError(f"config file {path} does not exist") from None
    except (ValueError, TypeError) as error:
        raise JobError(f"config: {error}") from None


def exit_code(run_job, argv, errors: tuple = ()) -> int:
    """Run a job's command line; a JobError (or one of `errors`) is one `error:` line and exit code 2."""
    try:
        return run_job(argv)
    except (JobError, *errors) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def resolve_job(args: argparse.Namespace) -> tuple[Config, str]:
    """Check every argument and path; returns (config, run_dir). Raises JobError with one line."""
    config = load_job_config(args.config, args.overrides + ([f"train.steps={args.steps}"] if args.steps else []))
    if not NAME_PATTERN.match(args.name):
        raise JobError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
    if args.workers < 0 or args.gpus_per_worker < 0 or args.cpus_per_worker <= 0 or args.max_failures < 0:
        raise JobError("--workers, --gpus-per-worker and --max-failures must be >= 0, --cpus-per-worker > 0")
    if args.workers == 0 and args.gpus_per_worker > 1:
        raise JobError("--workers 0 trains in this process on one device: use --workers N for several GPUs")
    world = max(args.workers, 1)
    if config.data.clips_per_batch % world:
        raise JobError(f"data.clips_per_batch={config.data.clips_per_batch} does not split over {world} workers")
    if "://" not in args.storage and not os.path.isabs(args.storage):
        raise JobError(f"--storage {args.storage}: give an absolute path or a URI (Ray workers run elsewhere)")
    try:
        sources = [parse_source(text) for text in args.data]
        # Ray workers do not start in this directory: `make train`'s data/clips becomes absolute.
        args.data = [[path if "://" in path else os.path.abspath(path), weight] for path, weight in sources]
        args.corpora = [training_corpus(path) for path, _ in args.data]  # footers only, in parallel
    except (DataError, OSError) as error:
        raise JobError(str(error)) from None
    too_many = files_verdict(args.corpora, config.data.max_skipped_fraction)
    if too_many is not None:
        raise JobError(too_many)
    if args.synthetic_test:
        args.synthetic_test = os.path.abspath(args.synthetic_test)
        if not os.path.isdir(os.path.join(args.synthetic_test, "ground_truth")):
            raise JobError(f"--synthetic-test {args.synthetic_test} is not a synthetic set "
                           "(write one with python -m jobs.synthetic)")
    return config, storage_path(args.storage, args.name)


def start_point(path: str, config: Config) -> tuple[Path, int]:
    """(checkpoint directory, step) of a --start-from checkpoint, checked against the run's config."""
    try:
        file = checkpoint_file(path)
        checkpoint = load_checkpoint(file)
    except CheckpointError as error:
        raise JobError(f"--start-from: {error}") from None
    theirs, ours = config_to_dict(checkpoint["config"])["model"], config_to_dict(config)["model"]
    differing = [f"model.{key}: {theirs.get(key)!r} there, {value!r} here" for key, value in ours.items()
                 if theirs.get(key) != value]
    if differing:
        raise JobError(f"--start-from {path} holds another model ({'; '.join(differing)}); "
                       "only the losses, data and schedule may differ")
    if checkpoint["step"] >= config.train.steps:
        raise JobError(f"--start-from {path} is at step {checkpoint['step']}, not before train.steps "
                       f"{config.train.steps}: raise --steps")
    return file.parent, checkpoint["step"]


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tracking.PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dataset_tag(sources: list) -> str:
    """The sources' directory names, with their weights when there are several: "synthetic:0.5+clips:0.5"."""
    names = [path.rstrip("/").rsplit("/", 1)[-1] for path, _ in sources]
    if len(sources) == 1:
        return names[0]
    return "+".join(f"{name}:{weight:g}" for name, (_, weight) in zip(names, sources))


def open_mlflow_run(args, config: Config, run_dir: str, uri: str) -> str:
    """The MLflow run of this training run: the one recorded in STORAGE/NAME/run.json, else a new one."""
    import mlflow
    from mlflow.tracking import MlflowClient

    recorded = read_run_file(run_dir)
    if recorded is not None:
        return recorded["mlflow_run_id"]
    client = MlflowClient(uri)
    experiment_id = tracking.experiment_id(client, uri, args.experiment)
    tags = {tracking.VARIANT_TAG: config.model.variant, tracking.ABLATION_TAG: args.ablation,
            tracking.DATASET_TAG: dataset_tag(args.data), tracking.COMMIT_TAG: _git_commit(),
            "cest.storage": run_dir, **({"cest.started_from": str(args.start_from)} if args.start_from else {})}
    if args.parent_run_id:
        tags["mlflow.parentRunId"] = args.parent_run_id
    run = client.create_run(experiment_id, run_name=args.name, tags=tags)
    params = [mlflow.entities.Param(k, str(v)) for k, v in _flatten(config_to_dict(config)).items()]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    write_run_file(run_dir, {"mlflow_run_id": run.info.run_id, "tracking_uri": uri, "experiment": args.experiment})
    return run.info.run_id


def start_ray(args) -> None:
    import ray

    if ray.is_initialized():  # a caller (jobs/ablations.py, a test) already joined a cluster
        return
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    needed = args.workers * args.cpus_per_worker + DATA_CPUS
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(needed)))


def check_resources(args) -> None:
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if args.workers and args.workers * args.cpus_per_worker > cpus - DATA_CPUS:
        raise JobError(f"{args.workers} workers x {args.cpus_per_worker} CPUs leave Ray Data less than {DATA_CPUS} "
                       f"of the cluster's {cpus:g} CPUs (training would wait for data forever): lower "
                       "--cpus-per-worker or --workers")


def fit(job: Job, args, config: Config):
    """Run the training loop (in this process or on Ray Train); returns the final checkpoint directory."""
    report = SkipReporter(job.skip_registry)
    held_apart = [key for _, key in job.holdout]
    datasets = [training_dataset(corpus, config.data.frames_per_clip, config.model.image_size,
                                 config.data.consistency_scope, held_apart, config.train.seed, report=report)
                for corpus in args.corpora]
    if args.workers == 0:
        import torch

        device = "cuda" if args.gpus_per_worker and torch.cuda.is_available() else "cpu"
        context = LocalContext(job, datasets, device)
        try:
            train_worker(job, context)
        finally:
            context.close()
        found = latest_checkpoint(job.run_dir)
        return found[0] if found else None

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.__dict__,
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": args.cpus_per_worker,
                                                           **({"GPU": args.gpus_per_worker} if args.gpus_per_worker else {})},
                                     placement_strategy=args.placement_strategy),
        run_config=RunConfig(name=args.name, storage_path=args.storage,
                             failure_config=FailureConfig(max_failures=args.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={f"train_{k}": dataset for k, dataset in enumerate(datasets)},
    )
    result = trainer.fit()
    return result.checkpoint.path if result.checkpoint is not None else None


def log_final(job: Job, config: Config, checkpoint_dir: str | None) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(job.tracking_uri)
    with tempfile.TemporaryDirectory() as scratch:
        save_config(config, Path(scratch, tracking.CONFIG_ARTIFACT))
        client.log_artifact(job.mlflow_run_id, str(Path(scratch, tracking.CONFIG_ARTIFACT)))
        if checkpoint_dir is not None:
            local = fetch_checkpoint(checkpoint_dir, str(Path(scratch, "checkpoint")))
            client.log_artifact(job.mlflow_run_id, str(Path(local, "checkpoint.pt")),
                                posixpath.dirname(tracking.CHECKPOINT_ARTIFACT))
    client.set_terminated(job.mlflow_run_id, "FINISHED")


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config, run_dir = resolve_job(args)
    found = None if args.fresh else latest_checkpoint(run_dir)
    # --start-from is read only where it is used: once the run has checkpoints, its source may be gone.
    start = start_point(args.start_from, config) if args.start_from and found is None else None
    if args.fresh:
        fs, root = resolve(run_dir)
        if fs.get_file_info(root).type == pyarrow.fs.FileType.Directory:
            fs.delete_dir(root)
            print(f"--fresh: deleted the earlier run {run_dir}")
    elif found is not None:
        if found[1] >= config.train.steps:
            print(f"{args.name} is already at step {found[1]} of {config.train.steps}: nothing to do "
                  f"(raise --steps to train on, or --fresh to start over)")
            return 0
        print(f"resuming {args.name} from step {found[1]} ({found[0]})")
    elif read_run_file(run_dir) is not None and start is None:
        print(f"{args.name}: an earlier attempt left no checkpoint; starting at step 0 in the same MLflow run")
    if start is not None:
        found = (copy_start(*start, run_dir), start[1])
        print(f"starting {args.name} at step {found[1]} from {args.start_from} (copied to {found[0]})")

    start_ray(args)
    check_resources(args)
    uri = tracking.tracking_uri()
    mlflow_run_id = open_mlflow_run(args, config, run_dir, uri)
    skips = SkipList(storage_path(run_dir, SKIP_FILE), config.data.max_skipped_fraction)  # a resume keeps its entries
    for corpus in args.corpora:
        skips.track(corpus)
    holdout = holdout_rows(args.corpora[0], config.train.holdout_clips, skips)
    registry, registry_handle = start_skip_registry(skips)
    job = Job(config_to_dict(config), args.data, args.name, run_dir, uri, mlflow_run_id,
              found[0] if found else None, holdout, args.workers, args.gpus_per_worker, args.crash_once_at_step,
              args.synthetic_test, registry)
    print(f"training {args.name}: {config.model.variant}, {config.train.steps} steps of "
          f"{config.data.clips_per_batch} clips x {config.data.frames_per_clip} frames at {config.model.image_size} px, "
          f"{args.workers or 'no'} Ray Train workers; checkpoints in {run_dir}; MLflow run {mlflow_run_id} at {uri}",
          flush=True)
    import ray

    try:
        checkpoint = fit(job, args, config)
        too_many = ray.get(registry_handle.verdict.remote())
        if too_many is not None:
            raise DataError(too_many)
    except BaseException:
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).set_terminated(mlflow_run_id, "FAILED")
        raise
    finally:
        ray.kill(registry_handle)
    log_final(job, config, checkpoint)
    print(f"done: {args.name} at step {config.train.steps}; final checkpoint {checkpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return exit_code(run, argv, (DataError,))


if __name__ == "__main__":
    sys.exit(main())
