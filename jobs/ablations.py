"""The paper's ablations as child runs of one MLflow parent run: `make ablations` / `python jobs/ablations.py`.

    python jobs/ablations.py --data data/clips --config jobs/configs/cpu_demo.yaml --name ablations
    ray job submit --working-dir . -- python jobs/ablations.py --data s3://b/clips --config jobs/configs/voxceleb.yaml \\
        --workers 4 --gpus-per-worker 1 --storage s3://b/runs --parallel --name ablations

Each variant is a training run of jobs/train.py named NAME-VARIANT under the parent run NAME (tag
cest.role=ablations; the children carry cest.variant and cest.ablation, columns of the runs table that
`make mlflow-ui` opens). Locally they run one after another in this process; with --parallel each is its own
driver on the cluster (side by side). The parent run is the comparison: the learning curves overlaid
(comparison/<metric>.png), the children's held-apart image grids side by side at the steps they share (image
key "holdout_by_variant": the UI's slider steps through training), and, once `jobs.eval` has scored the
children, the evaluation table (comparison/evaluation.html and .md).
Re-running the command resumes: the parent run id is kept in STORAGE/NAME/ablations.json and each child
resumes from its own checkpoints.
"""

import argparse
import json
import os
import posixpath
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow.fs

from jobs import tracking
from jobs.data import DataError, parse_source, training_corpus
from jobs.train import (DEFAULT_STORAGE, NAME_PATTERN, JobError, exit_code, load_job_config, read_run_file,
                        storage_path)
from jobs.train import run as train
from pipelines.inputs import resolve

FIXED_ABLATIONS = {
    "cest": [],  # the full model: conditional estimation, symmetry and pairwise consistency (Fig. 4a)
    "iest": ["model.variant=iest"],  # independent estimation (Fig. 3, Table 1)
    "symmetry_only": ["loss.consistency=false"],  # Fig. 4c
    "consistency_only": ["loss.symmetry=false"],  # Fig. 4d
    "neither": ["loss.symmetry=false", "loss.consistency=false"],  # the degenerate solution, Fig. 4e
    "video_scope": ["data.consistency_scope=video"],  # consistency across a whole video, Fig. 11
}
# FML-style clip averages (App. B.2, Fig. 10): the batch stays fixed while the frames per clip vary.
CLIP_AVERAGE_FRAMES = (2, 4, 8)


def ablations(batch_size: int) -> dict[str, list[str]]:
    """name -> config overrides of every ablation, for a batch of `batch_size` images."""
    variants = dict(FIXED_ABLATIONS)
    for frames in CLIP_AVERAGE_FRAMES:
        if batch_size % frames == 0:
            variants[f"clip_average_{frames}"] = ["loss.consistency_mode=clip_average",
                                                  f"data.frames_per_clip={frames}",
                                                  f"data.clips_per_batch={batch_size // frames}"]
    return variants


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, action="append", metavar="PATH[:WEIGHT]",
                        help="as jobs/train.py's --data (repeat to mix sources)")
    parser.add_argument("--config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--only", help="comma-separated subset of the ablations (default: all)")
    parser.add_argument("--synthetic-test", help="held-apart synthetic set scored during training (jobs/train.py)")
    parser.add_argument("--start-from", metavar="CHECKPOINT",
                        help="every variant starts from this checkpoint (jobs/train.py --start-from), e.g. the "
                             "end of a landmark warm-up they share")
    parser.add_argument("--name", default="ablations", help="parent run name; children are NAME-VARIANT")
    parser.add_argument("--storage", default=str(DEFAULT_STORAGE))
    parser.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    parser.add_argument("--parallel", action="store_true", help="one driver per variant on the cluster, side by side")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--address")
    return parser.parse_args(argv)


def parent_run(args) -> str:
    """The parent MLflow run of this sweep (continued when the sweep is run again)."""
    from mlflow.tracking import MlflowClient

    fs, root = resolve(posixpath.join(args.storage, args.name) if "://" in args.storage
                       else str(Path(args.storage, args.name)))
    record = posixpath.join(root, "ablations.json")
    if fs.get_file_info(record).type == pyarrow.fs.FileType.File:
        with fs.open_input_stream(record) as stream:
            return json.loads(stream.read())["mlflow_run_id"]
    uri = tracking.tracking_uri()
    client = MlflowClient(uri)
    experiment_id = tracking.experiment_id(client, uri, args.experiment)
    run = client.create_run(experiment_id, run_name=args.name, tags={tracking.ROLE_TAG: tracking.ABLATIONS_ROLE})
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(record) as stream:
        stream.write(json.dumps({"mlflow_run_id": run.info.run_id}).encode())
    return run.info.run_id


def child_arguments(args, variant: str, overrides: list[str], parent: str) -> list[str]:
    argv = [item for source in args.data for item in ("--data", source)]
    argv += ["--name", f"{args.name}-{variant}", "--storage", args.storage,
            "--experiment", args.experiment, "--ablation", variant, "--parent-run-id", parent,
            "--workers", str(args.workers), "--gpus-per-worker", str(args.gpus_per_worker),
            "--cpus-per-worker", str(args.cpus_per_worker)]
    for option, value in (("--config", args.config), ("--steps", args.steps), ("--address", args.address),
                          ("--synthetic-test", args.synthetic_test), ("--start-from", args.start_from)):
        if value is not None:
            argv += [option, str(value)]
    for assignment in args.overrides + overrides:
        argv += ["--set", assignment]
    return argv


def driver_environment(drivers: int) -> dict[str, str]:
    """The environment of each of DRIVERS training drivers started side by side on this machine. Unless the user
    set OMP_NUM_THREADS, the cores are split between them: torch gives every process one thread per core, and
    two drivers training in-process (--workers 0) on 2 cores then took 484 s for what one thread each did in 180 s
    (docs/training.md, "Ablations")."""
    environment = dict(os.environ)
    if "OMP_NUM_THREADS" not in environment:
        environment["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // drivers))
    return environment


def selected_ablations(args, base_batch_size: int) -> dict[str, list[str]]:
    """The ablations --only names (default: all), as name -> config overrides."""
    variants = ablations(base_batch_size)
    if not args.only:
        return variants
    unknown = set(args.only.split(",")) - set(variants)
    if unknown:
        raise JobError(f"--only: unknown ablations {sorted(unknown)}; known: {', '.join(variants)}")
    return {name: variants[name] for name in args.only.split(",")}


def run_variants(args, variants: dict[str, list[str]]) -> dict[str, int]:
    """Train every variant (name -> overrides) as a child run NAME-VARIANT of the parent run NAME; returns each
    child's exit code. jobs/synthetic_experiment.py runs its seeds and loss sweep through this too."""
    if not NAME_PATTERN.match(args.name):
        raise JobError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
    try:
        for source in args.data:
            training_corpus(parse_source(source)[0])
    except (DataError, OSError) as error:
        raise JobError(str(error)) from None
    parent = parent_run(args)
    print(f"ablations {args.name} (MLflow parent run {parent}): {', '.join(variants)}", flush=True)
    if args.parallel:
        environment = driver_environment(len(variants))
        drivers = {name: subprocess.Popen([sys.executable, str(Path(__file__).with_name("train.py")),
                                           *child_arguments(args, name, overrides, parent)], env=environment)
                   for name, overrides in variants.items()}
        codes = {name: driver.wait() for name, driver in drivers.items()}
    else:
        codes = {name: train(child_arguments(args, name, overrides, parent)) for name, overrides in variants.items()}
    failed = [name for name, code in codes.items() if code != 0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    children = {name: record["mlflow_run_id"] for name in variants
                if (record := read_run_file(storage_path(args.storage, f"{args.name}-{name}"))) is not None}
    log_learning_curves(client, parent, children)
    log_holdout_grids(client, parent, children)
    client.set_terminated(parent, "FAILED" if failed else "FINISHED")
    print(f"ablations {args.name}: " + (f"failed: {', '.join(failed)}" if failed else f"{len(codes)} runs finished"))
    return codes


# The curves the parent run shows overlaid, child against child (those a child did not log are left out).
COMPARED_CURVES = tuple(tracking.TRAIN + term for term in ("total", "photometric", "symmetry", "consistency",
                                                           "landmark", "regulariser")) + \
    tuple(tracking.SYNTHETIC + name for name in ("rotation_deg", "vertex_mm", "reflectance_mae"))


def log_learning_curves(client, parent: str, children: dict[str, str]) -> None:
    """One figure per curve in COMPARED_CURVES with every child's history overlaid, logged into the parent run
    as comparison/<metric>.png (comparison/train/total.png), so the ablation's parent is where the variants are
    compared."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as scratch:
        for metric in COMPARED_CURVES:
            histories = {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))
                         for name, run_id in children.items()}
            histories = {name: points for name, points in histories.items() if points}
            if not histories:
                continue
            figure, axes = plt.subplots(figsize=(6, 4))
            for name, points in histories.items():
                axes.plot(*zip(*points), label=name)
            axes.set(xlabel="step", ylabel=metric, title=f"{metric} by variant")
            axes.legend()
            path = Path(scratch, f"{metric}.png")
            path.parent.mkdir(exist_ok=True)
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            client.log_artifact(parent, str(path), posixpath.join("comparison", posixpath.dirname(metric)))


SIDE_BY_SIDE_KEY = "holdout_by_variant"
LABEL_HEIGHT = 24  # pixels above each child's grid for its name


def image_steps(client, run_id: str, key: str) -> dict[int, str]:
    """step -> artifact path of the run's image `key` logged at that step (MLflow's
    images/KEY+step+STEP+timestamp+T+UUID.png; the latest when a step was logged twice)."""
    found = {}
    for artifact in sorted(client.list_artifacts(run_id, "images"), key=lambda a: a.path):
        name = posixpath.basename(artifact.path)
        parts = name.removesuffix(".png").split("+")
        if name.endswith(".png") and parts[0] == key and parts[1] == "step":
            found.setdefault(int(parts[2]), []).append((int(parts[4]), artifact.path))
    return {step: max(logged)[1] for step, logged in found.items()}


def labelled_side_by_side(images: dict[str, np.ndarray]) -> np.ndarray:
    """name -> (H, W, 3) uint8 RGB images, placed left to right on white, each with its name above it."""
    import cv2

    height = max(image.shape[0] for image in images.values()) + LABEL_HEIGHT
    columns = []
    for name, image in images.items():
        column = np.full((height, image.shape[1] + 8, 3), 255, np.uint8)
        column[LABEL_HEIGHT:LABEL_HEIGHT + image.shape[0], 4:4 + image.shape[1]] = image
        cv2.putText(column, name, (4, LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        columns.append(column)
    return np.concatenate(columns, axis=1)


def log_holdout_grids(client, parent: str, children: dict[str, str]) -> None:
    """The children's held-apart image grids side by side, one image per step that every child logged, into the
    parent run with key SIDE_BY_SIDE_KEY (steps the parent already has are skipped: a rerun adds nothing)."""
    import cv2

    grids = {name: image_steps(client, run_id, tracking.HOLDOUT_IMAGE_KEY) for name, run_id in children.items()}
    shared = set.intersection(*(set(steps) for steps in grids.values())) if grids else set()
    with tempfile.TemporaryDirectory() as scratch:
        for step in sorted(shared - set(image_steps(client, parent, SIDE_BY_SIDE_KEY))):
            images = {}
            for name, run_id in children.items():
                path = client.download_artifacts(run_id, grids[name][step], str(Path(scratch, name)))
                images[name] = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            client.log_image(parent, labelled_side_by_side(images), key=SIDE_BY_SIDE_KEY, step=step)


def run(argv=None) -> int:
    args = parse_args(argv)
    variants = selected_ablations(args, load_job_config(args.config, args.overrides).data.batch_size)
    codes = run_variants(args, variants)
    return 1 if any(code != 0 for code in codes.values()) else 0


def main(argv=None) -> int:
    return exit_code(run, argv)


if __name__ == "__main__":
    sys.exit(main())
