"""Does conditioning help? Train the paper's variants on synthetic clips and score them on held-apart clips.

    python -m jobs.synthetic_experiment --train data/synth_train --test data/synth_test --output runs/synth \
        --steps 150 --seeds 0 1 2 [--variants cest iest ...] [--config jobs/configs/synthetic_cpu.yaml]
    python -m jobs.synthetic_experiment ... --sweep    # issue 10 fix 7: CEST under several loss settings
    python -m jobs.synthetic_experiment ... --steps 0 --variants cest --output runs/untrained   # the baseline

Each run: `cest.train_local.train` (the shared `cest.step.train_step`) on batches of clips x frames drawn from
the train set's clip rows (read by `jobs.frames`, resized to the model's image size), a fixed number of steps,
then `jobs.synthetic_eval.evaluate` on the test set. Writes <output>/<run>/seed<k>/checkpoint.pt and
report.json, <output>/results.json and <output>/results.md (mean and standard deviation over seeds of each
metric's per-image mean). Runs already finished (report.json present) are read, not retrained.
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from cest.checkpoint import save_checkpoint
from cest.config import Config, load_config
from jobs.synthetic_eval import METRICS, evaluate

# The paper's ablations (Sec. 4.2, App. B.2) as changes to the base configuration.
VARIANTS = {
    "cest": {},
    "iest": {"model": {"variant": "iest"}},
    "symmetry_only": {"loss": {"consistency": False}},
    "consistency_only": {"loss": {"symmetry": False}},
    "neither": {"loss": {"symmetry": False, "consistency": False}},
    "clip_average": {"loss": {"consistency_mode": "clip_average"}},
}

# Issue 10 fix 7: the paper's loss weights were lost; CEST under each setting, scored by shape and reflectance.
SWEEP = {
    f"sweep_lm{landmark:g}_reg{regulariser:g}_{distance}": {
        "loss": {"w_landmark": landmark, "w_regulariser": regulariser, "distance": distance}}
    for landmark, regulariser, distance in [
        (1.0, 1e-3, "l21"), (10.0, 1e-3, "l21"), (30.0, 1e-3, "l21"),
        (10.0, 1e-2, "l21"), (10.0, 1e-3, "l1"),
    ]
}


def with_changes(base: Config, changes: dict) -> Config:
    parts = {name: replace(getattr(base, name), **values) for name, values in changes.items()}
    return replace(base, **parts)


def run_one(config: Config, frames, test_dir: Path, steps: int, seed: int, directory: Path, log) -> dict:
    from cest.model import build_model
    from cest.train_local import clip_batches, train

    report_path = directory / "report.json"
    if report_path.is_file():
        return json.loads(report_path.read_text())
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(config.model)
    start = time.perf_counter()
    def progress(step: int, terms: dict[str, float]) -> None:
        if (step + 1) % 20 == 0:
            log(f"{directory}: step {step + 1}/{steps}, loss {terms['total']:.4f}")

    history = train(model, config, clip_batches(frames, config.data, generator), steps, generator, progress)
    seconds = time.perf_counter() - start
    save_checkpoint(directory, model, config, step=steps)
    report = evaluate(model, test_dir)
    report["training"] = {"steps": steps, "seconds": round(seconds, 1),
                          "final_loss": history[-1] if history else None,  # --steps 0: the untrained model
                          "images_per_second": round(steps * config.data.batch_size / max(seconds, 1e-9), 1)}
    report_path.write_text(json.dumps(report, indent=2))
    log(f"{directory}: trained {steps} steps in {seconds:.0f} s; " + ", ".join(
        f"{name} {report['metrics'][name]['mean']:.4g}" for name in METRICS))
    return report


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="synthetic training set (python -m jobs.synthetic)")
    parser.add_argument("--test", type=Path, required=True, help="held-apart synthetic set (another seed)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="YAML base configuration (default: cest/config.py)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--sweep", action="store_true", help="run the loss-weight sweep instead of the variants")
    args = parser.parse_args(argv)
    for directory in (args.train, args.test):
        if not (directory / "ground_truth").is_dir():
            print(f"error: {directory} is not a synthetic set (write one with python -m jobs.synthetic)",
                  file=sys.stderr)
            return 2
    from jobs.frames import frames_from_rows, read_clip_rows

    base = load_config(args.config) if args.config else Config()
    rows = list(read_clip_rows(args.train))
    frames = frames_from_rows(rows, base.model.image_size, max(row["num_frames"] for row in rows))
    print(f"train set: {len(frames)} frames of {len(rows)} clips at {base.model.image_size} px", flush=True)
    runs = SWEEP if args.sweep else {name: VARIANTS[name] for name in args.variants}
    reports = {}
    for run, changes in runs.items():
        config = with_changes(base, changes)
        reports[run] = [run_one(config, frames, args.test, args.steps, seed, args.output / run / f"seed{seed}",
                                lambda text: print(text, flush=True))
                        for seed in args.seeds]
    summary = aggregate(reports)
    name = "sweep" if args.sweep else "results"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{name}.json").write_text(json.dumps(
        {"steps": args.steps, "seeds": args.seeds, "config": str(args.config), "runs": summary}, indent=2))
    table = markdown(summary)
    (args.output / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
