"""The MLflow screenshots in docs/images/ (README "Tracking runs in MLflow", docs/training.md), taken in a real
browser over a store written by the project's own logging code:

    python docs/make_screenshots.py [--steps 40] [--keep DIR]
    python docs/make_screenshots.py --store sqlite:///$PWD/mlflow.db     # after `make demo`: its own runs

1. small synthetic training and held-apart sets (jobs.synthetic);
2. CEST and IEST trained side by side as the children of one ablation run (jobs/ablations.py, the demo's
   config at small widths, a few steps), the held-apart synthetic set scored during training;
3. both children evaluated on the AFLW2000-3D sample (jobs.eval --latest-ablations);
4. `mlflow ui` over that store and headless Chromium (tests/mlflow_browser.py) on the page `make mlflow-ui`
   prints: docs/images/mlflow_charts.png (the chart view's sections, the eval/ headline scores first),
   docs/images/mlflow_training_curves.png (the same page with "train/" typed into its chart search: here a
   second shared view of this scratch store), docs/images/mlflow_runs_table.png (the runs table).
Screenshots are stored as 256-colour PNGs (a few hundred KB at most). About 10 minutes on 2 CPU cores.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cest import assets  # noqa: E402
from jobs import tracking  # noqa: E402

IMAGES = ROOT / "docs" / "images"
ASSISTANT_PANEL_WIDTH = 480  # pixels at the right of the window
SMALL = ["--set", "model.encoder_widths=[8,16,16,32,32,32]", "--set", "model.unet_widths=[8,16,16,32,32]",
         "--set", "data.clips_per_batch=4", "--set", "data.shuffle_buffer_clips=8", "--set", "train.holdout_clips=2"]


def write_store(scratch: Path, steps: int) -> str:
    """Train and evaluate into the store scratch/mlflow.db; returns the experiment's id."""
    from jobs.ablations import main as ablations
    from jobs.eval import main as evaluate
    from jobs.synthetic import generate

    generate(scratch / "synthetic", 48, 2, seed=0, log=lambda line: None)
    generate(scratch / "synthetic_test", 8, 2, seed=1000, log=lambda line: None)
    every = max(1, steps // 4)
    schedule = ["--set", f"loss.landmark_warmup_steps={every}", "--set", f"train.log_every={max(1, every // 2)}",
                "--set", f"train.image_every={every}", "--set", f"train.checkpoint_every={steps}"]
    if ablations(["--data", str(scratch / "synthetic"), "--config", str(ROOT / "jobs/configs/demo_mixture.yaml"),
                  "--steps", str(steps), "--only", "cest,iest", "--name", "demo", "--storage", str(scratch / "runs"),
                  "--synthetic-test", str(scratch / "synthetic_test"), *SMALL, *schedule]):
        raise SystemExit("training failed")
    aflw = assets.fetch_dir("aflw2000_sample")
    if evaluate(["--latest-ablations", "--aflw2000", str(aflw), "--images", str(aflw), "--output",
                 str(scratch / "eval")]):
        raise SystemExit("evaluation failed")
    from jobs.runs import client

    return client().get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id


def save_small_png(source: Path, target: Path, width: int) -> None:
    """The screenshot's left `width` pixels (MLflow opens its assistant panel on the right on a first visit),
    as a 256-colour PNG."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    image.crop((0, 0, width, image.height)).quantize(256).save(target, optimize=True)


def take_screenshots(uri: str, experiment: str, scratch: Path) -> list[Path]:
    import json

    from mlflow.tracking import MlflowClient
    from mlflow_browser import load_page, mlflow_ui

    IMAGES.mkdir(parents=True, exist_ok=True)
    curves_view = dict(json.loads(tracking.VIEW_STATE), chartsSearchFilter=tracking.TRAIN)
    MlflowClient(uri).set_experiment_tag(experiment, "mlflow.sharedViewState.training_curves", json.dumps(curves_view))
    with mlflow_ui(uri) as server:
        charts = tracking.runs_view_url(server, experiment)
        pages = {"mlflow_charts.png": (charts, (1900, 1500)),
                 "mlflow_training_curves.png": (charts.replace(f"viewStateShareKey={tracking.VIEW_KEY}",
                                                               "viewStateShareKey=training_curves"), (1900, 1500)),
                 "mlflow_runs_table.png": (charts.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"), (1900, 600))}
        written = []
        for name, (url, size) in pages.items():
            raw = scratch / name
            load_page(url, scratch / f"profile-{name}", screenshot=raw, size=size)
            save_small_png(raw, IMAGES / name, size[0] - ASSISTANT_PANEL_WIDTH)
            written.append(IMAGES / name)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per variant")
    parser.add_argument("--keep", type=Path, help="write the store here and keep it (default: a temporary folder)")
    parser.add_argument("--store", help="screenshots of this store's experiment 'cest' instead, nothing trained "
                                        "(`make demo`'s: sqlite:///$PWD/mlflow.db)")
    args = parser.parse_args(argv)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="cest-screenshots-"))
    scratch.mkdir(parents=True, exist_ok=True)
    uri = args.store or f"sqlite:///{scratch.resolve() / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from mlflow.tracking import MlflowClient

    if not args.store and not (scratch / "experiment.txt").is_file():  # else --keep of an earlier run: screenshots
        (scratch / "experiment.txt").write_text(f"{write_store(scratch, args.steps)}\n")
    # The experiment's id, with the view of this code set on it, as `make mlflow-ui` does.
    experiment = tracking.experiment_id(MlflowClient(uri), uri, tracking.DEFAULT_EXPERIMENT)
    for path in take_screenshots(uri, experiment, scratch):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
