"""Does conditioning help? Train the paper's variants on synthetic clips and score them on held-apart clips.

    python -m jobs.synthetic_experiment --train data/synth_train --test data/synth_test --output data/synth_runs \
        --config jobs/configs/synthetic_cpu.yaml --steps 60 --seeds 0 1 2 [--variants cest iest ...]
    python -m jobs.synthetic_experiment ... --sweep    # issue 10 fix 7: CEST under several loss settings
    python -m jobs.synthetic_experiment ... --steps 0  # the untrained model (mean face, frontal, flat, ambient),
                                                       # the mean face and the training set's mean shape at the
                                                       # true pose

Every run goes through the project's training job: each seed K is one ablation sweep of jobs/ablations.py, an
MLflow parent run NAME-seedK (experiment "cest-synthetic" unless --experiment) whose children NAME-seedK-VARIANT
are jobs/train.py runs (Ray Data ingest of the synthetic Parquet clips, train.seed=K, checkpoints under OUTPUT).
Each child's final checkpoint is then scored on the held-apart set (jobs.synthetic_eval.evaluate): the scores go
into the child's MLflow run (metrics synthetic/<metric>, the mean over the test images; report.json as an
artifact) and into OUTPUT/NAME-seedK-VARIANT/report.json. OUTPUT/results.json and results.md (sweep.* with
--sweep) hold the mean and standard deviation over seeds of each metric. Running the command again resumes:
finished runs are not retrained (jobs/train.py resumes by name) and scored runs are not rescored.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from jobs import ablations
from jobs.synthetic import read_ground_truth
from jobs.synthetic_eval import METRICS, evaluate
from jobs.tracking import SYNTHETIC
from jobs.train import JobError, exit_code, latest_checkpoint, load_job_config, read_run_file

EXPERIMENT = "cest-synthetic"  # apart from the real-data runs that `make eval --latest-ablations` reads
# The paper's ablations (Sec. 4.2, App. B.2), as jobs/ablations.py names them (clip averages over 4 frames).
PAPER_VARIANTS = ("cest", "iest", "symmetry_only", "consistency_only", "neither", "clip_average_4")

# Issue 10 fix 7: the paper's loss weights were lost; CEST under each setting, scored by shape and reflectance.
SWEEP = {
    f"sweep_lm{landmark:g}_reg{regulariser:g}_{distance}": [
        f"loss.w_landmark={landmark}", f"loss.w_regulariser={regulariser}", f"loss.distance={distance}"]
    for landmark, regulariser, distance in [
        (1.0, 1e-3, "l21"), (10.0, 1e-3, "l21"), (30.0, 1e-3, "l21"),
        (10.0, 1e-2, "l21"), (10.0, 1e-3, "l1"),
    ]
}


def score(run_dir: Path, test_dir: Path) -> dict:
    """The held-apart scores of a finished run's final checkpoint, logged into its MLflow run once."""
    from mlflow.tracking import MlflowClient

    from cest.checkpoint import load_model

    report_path = run_dir / "report.json"
    checkpoint, step = latest_checkpoint(str(run_dir))
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        if report["training"]["steps"] == step:  # else trained on since (a larger --steps): score again
            return report
    report = evaluate(load_model(checkpoint)[0], test_dir)
    report["training"] = {"steps": step, "checkpoint": checkpoint}
    report_path.write_text(json.dumps(report, indent=2))
    recorded = read_run_file(str(run_dir))
    client = MlflowClient(recorded["tracking_uri"])
    for name in METRICS:
        client.log_metric(recorded["mlflow_run_id"], SYNTHETIC + name, report["metrics"][name]["mean"], step=step)
    client.log_artifact(recorded["mlflow_run_id"], str(report_path))
    return report


def mean_shape(train_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean identity (K_id,) and expression (K_exp,) coefficients over a synthetic set's frames."""
    truths = list(read_ground_truth(train_dir).values())
    frames = [len(t["viewpoint"]) for t in truths]
    identity = np.average(np.stack([t["alpha_identity"] for t in truths]), axis=0, weights=frames)
    expression = np.concatenate([t["alpha_expression"] for t in truths]).mean(0)
    return torch.from_numpy(identity).float(), torch.from_numpy(expression)


def output_mean_shape(model, shape: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Make the shape network output the training set's mean coefficients (`mean_shape`), whatever the image.
    The generator's expressions are not centred on the mean face (their mean is about 0.2 sd per blendshape), so
    this constant scores well below the mean face, and a trained shape network must beat it to show it reads
    anything from the image."""
    identity, expression = shape
    mean = torch.cat([identity, expression / model.expression_sd])
    with torch.no_grad():
        model.shape_net.head.weight.zero_()
        model.shape_net.head.bias.copy_(mean.to(model.shape_net.head.bias.dtype))


def untrained_report(config_path: str | None, overrides: list[str], test_dir: Path, seed: int, directory: Path,
                     true_viewpoint: bool = False, shape: tuple[torch.Tensor, torch.Tensor] | None = None):
    """The baseline: the model as initialised (mean face, frontal view, flat reflectance, ambient light); with
    `true_viewpoint` at the true pose; with `shape` (`mean_shape`) that shape instead of the mean face."""
    from cest.model import build_model

    report_path = directory / "report.json"
    if not report_path.is_file():
        torch.manual_seed(seed)
        model = build_model(load_job_config(config_path, overrides).model)
        if shape is not None:
            output_mean_shape(model, shape)
        report = evaluate(model, test_dir, true_viewpoint=true_viewpoint)
        directory.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2))
    return json.loads(report_path.read_text())


def aggregate(reports: dict[str, list[dict]]) -> dict:
    """run -> metric -> {"mean", "std", "seeds"} over the seeds' per-image means."""
    out = {}
    for run, seeds in reports.items():
        out[run] = {}
        for name in METRICS:
            means = [r["metrics"][name]["mean"] for r in seeds]
            out[run][name] = {"mean": statistics.fmean(means),
                              "std": statistics.stdev(means) if len(means) > 1 else 0.0, "seeds": means}
    return out


def markdown(summary: dict) -> str:
    names = list(METRICS)
    lines = ["| run | " + " | ".join(f"{METRICS[n][0]} ({METRICS[n][1]})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for run, metrics in summary.items():
        lines.append(f"| {run} | " + " | ".join(f"{metrics[n]['mean']:.4g} ± {metrics[n]['std']:.2g}"
                                                 for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return exit_code(run, argv)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="synthetic training set (python -m jobs.synthetic)")
    parser.add_argument("--test", type=Path, required=True, help="held-apart synthetic set (another seed)")
    parser.add_argument("--output", type=Path, required=True, help="checkpoints, reports and the results table")
    parser.add_argument("--config", help="YAML overrides of cest/config.py (jobs/configs/synthetic_cpu.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (0: the untrained model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(PAPER_VARIANTS),
                        help="ablations by jobs/ablations.py's names (clip_average_F for F frames a clip)")
    parser.add_argument("--sweep", action="store_true", help="run the loss-weight sweep instead of the variants")
    parser.add_argument("--name", default="synthetic", help="parent runs are NAME-seedK, children NAME-seedK-RUN")
    parser.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--start-from", metavar="CHECKPOINT",
                        help="every run of seed K starts from this checkpoint, {seed} replaced by K (jobs/train.py "
                             "--start-from), e.g. data/recipe/cest-seed{seed}-cest/checkpoint_00008000 copied "
                             "aside: ablations that share the recipe's landmark warm-up train only what follows")
    args = parser.parse_args(argv)
    for directory in (args.train, args.test):
        if not (directory / "ground_truth").is_dir():
            raise JobError(f"{directory} is not a synthetic set (write one with python -m jobs.synthetic)")
    output = args.output.resolve()  # jobs/train.py stores runs under an absolute path (Ray workers run elsewhere)
    reports: dict[str, list[dict]] = {}
    if args.steps == 0:
        reports["untrained"] = [untrained_report(args.config, args.overrides, args.test, seed,
                                                 output / "untrained" / f"seed{seed}") for seed in args.seeds]
        reports["mean_face_true_pose"] = [untrained_report(args.config, args.overrides, args.test, seed,
                                                           output / "mean_face_true_pose" / f"seed{seed}", True)
                                          for seed in args.seeds]
        training_shape = mean_shape(args.train)
        reports["mean_shape_true_pose"] = [untrained_report(args.config, args.overrides, args.test, seed,
                                                            output / "mean_shape_true_pose" / f"seed{seed}", True,
                                                            training_shape) for seed in args.seeds]
    else:
        base = load_job_config(args.config, args.overrides)
        known = ablations.ablations(base.data.batch_size)
        unknown = sorted(set(args.variants) - set(known))
        if unknown and not args.sweep:
            raise JobError(f"--variants: unknown {unknown} for a batch of {base.data.batch_size}; known: {', '.join(known)}")
        runs = SWEEP if args.sweep else {name: known[name] for name in args.variants}
        for seed in args.seeds:
            sweep_args = ablations.parse_args(
                ["--data", str(args.train.resolve()), "--steps", str(args.steps), "--name", f"{args.name}-seed{seed}",
                 "--storage", str(output), "--experiment", args.experiment, "--set", f"train.seed={seed}",
                 "--synthetic-test", str(args.test.resolve())]
                + (["--config", args.config] if args.config else [])
                + (["--start-from", args.start_from.format(seed=seed)] if args.start_from else [])
                + [item for assignment in args.overrides for item in ("--set", assignment)])
            codes = ablations.run_variants(sweep_args, runs)
            failed = [name for name, code in codes.items() if code != 0]
            if failed:
                raise JobError(f"seed {seed}: training failed for {', '.join(failed)} (see the log above)")
            for run_name in runs:
                run_dir = output / f"{args.name}-seed{seed}-{run_name}"
                report = score(run_dir, args.test)
                print(f"{run_dir.name}: " + ", ".join(f"{name} {report['metrics'][name]['mean']:.4g}"
                                                      for name in METRICS), flush=True)
                reports.setdefault(run_name, []).append(report)
    summary = aggregate(reports)
    name = "sweep" if args.sweep else "untrained" if args.steps == 0 else "results"
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(
        {"steps": args.steps, "seeds": args.seeds, "config": args.config, "overrides": args.overrides,
         "mlflow_experiment": args.experiment, "runs": summary}, indent=2))
    table = markdown(summary)
    (output / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
