"""MLflow conventions shared by training, ablations and evaluation (jobs/ only: cest/ never imports MLflow).

Store: `MLFLOW_TRACKING_URI` when set (a tracking server, or any store MLflow accepts), otherwise a SQLite
database at an absolute path in the project (`<repo>/mlflow.db`): Ray workers run in another working
directory, and MLflow 3 refuses the old ./mlruns file store.

Runs: one MLflow run per training run, in the experiment "cest" unless told otherwise. A training run logs
the resolved config as the artifact `config.yaml` and its final checkpoint as `checkpoint/checkpoint.pt`
(see cest.checkpoint). Tags: `cest.variant` (cest | iest), `cest.ablation` (the ablation's name, or
"none"), `cest.dataset`, `cest.git_commit`. An ablation sweep is a parent run tagged `cest.role=ablations`
whose children are training runs (MLflow's own `mlflow.parentRunId` tag links them).

Metric names: MLflow's chart view makes one section of the metrics that share a prefix (the name up to its
last "/"), sections and the charts in each in alphabetical order, so the names say where a number belongs:
  eval/              the headline scores of an evaluated run, one value each (also table columns):
                     eval/aflw2000_nme68_pct (oracle crops, yaw-balanced), eval/photometric_mae (face pixels)
  eval/<benchmark>/  the numbers of `jobs.eval`'s tables (jobs.eval.mlflow_metrics): eval/aflw2000/...,
                     eval/photometric/..., eval/micc/..., eval/now/..., eval/realy/... (the metrics.json key
                     after the benchmark's name)
  health/            degeneracy measures on the held-apart frames (cest.losses.degeneracy_measures)
  synthetic/         ground-truth scores on the held-apart synthetic set (jobs.synthetic_eval.METRICS)
  train/             loss terms, learning_rate and learning_rate_appearance, images_per_second,
                     data_wait_share, skipped_samples, gpu_peak_memory_gib
  system/            MLflow's own system metrics (psutil)

The page `make mlflow-ui` prints (`runs_view_url`) opens the experiment as model development on its charts,
in a shared view (MLflow's `viewStateShareKey`: the experiment tag `mlflow.sharedViewState.<key>` holds the UI
state): runs grouped by their `cest.ablation` tag, so that the children of an ablation run are charted side by
side (ungrouped, MLflow shows them folded under their parent run and charts none of them; a group of several
runs, seeds, is charted as their mean), and the runs table's columns: variant, ablation and HEADLINE_METRICS.
"""

import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPERIMENT = "cest"
CHECKPOINT_ARTIFACT = "checkpoint/checkpoint.pt"
CONFIG_ARTIFACT = "config.yaml"
ROLE_TAG, ABLATIONS_ROLE = "cest.role", "ablations"
# cest.ablation: the variant of an ablation child, or the file of a bare checkpoint an evaluation run scored (its
# group in the runs view).
VARIANT_TAG, ABLATION_TAG, DATASET_TAG, COMMIT_TAG = "cest.variant", "cest.ablation", "cest.dataset", "cest.git_commit"
# A bare checkpoint's evaluation run and the run that trained it name each other (jobs.eval).
TRAINING_RUN_TAG, EVALUATION_RUN_TAG = "cest.training_run", "cest.evaluation_run"
# MLflow 3's UI opens an experiment by its kind: the GenAI view (traces, token usage) unless it is told that the
# experiment is custom model development, whose view is runs and charts.
EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
# The image key of the held-apart frames' grid a training run logs at its image steps (jobs/monitor.py).
HOLDOUT_IMAGE_KEY = "holdout"
# Metric sections (module docstring).
TRAIN, HEALTH, SYNTHETIC, EVAL = "train/", "health/", "synthetic/", "eval/"
# metrics.json key of jobs.eval -> the headline name it is also logged under.
EVAL_HEADLINES = {"aflw2000_oracle_nme68_pct_balanced": "eval/aflw2000_nme68_pct",
                  "photometric_mae_face": "eval/photometric_mae"}


# A run's headline numbers: the runs table's metric columns (the latest value of a curve).
HEADLINE_METRICS = (*EVAL_HEADLINES.values(), SYNTHETIC + "vertex_mm", TRAIN + "total")
# The UI state the printed page loads: runs grouped by ablation (MLflow's MODE.AGGREGATE.KEY), the runs
# table's columns (MLflow's column keys).
VIEW_KEY = "cest"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_STATE = json.dumps({"groupBy": f"tag.average.{ABLATION_TAG}",
                         "selectedColumns": [f"tags.`{VARIANT_TAG}`", f"tags.`{ABLATION_TAG}`",
                                             *(f"metrics.`{name}`" for name in HEADLINE_METRICS)]})


def eval_metric_names(key: str) -> list[str]:
    """The MLflow names of a `jobs.eval` metrics.json key: in its benchmark's section (the key's first word),
    and the headline name too for a headline score. "aflw2000_oracle_nme68_pct_0_30" ->
    ["eval/aflw2000/oracle_nme68_pct_0_30"]."""
    benchmark, _, rest = key.partition("_")
    return [f"{EVAL}{benchmark}/{rest}"] + ([EVAL_HEADLINES[key]] if key in EVAL_HEADLINES else [])


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or the project's SQLite store as an absolute URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite database (mlartifacts/EXPERIMENT), since
    MLflow's default for a database store is ./mlruns in whatever directory the creating process runs in;
    None (the server's choice) for a tracking server."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / experiment).as_uri()


def experiment_id(client, uri: str, name: str) -> str:
    """The id of experiment `name` in the store at `uri`, created with `artifact_location` if it is new, and
    marked as model development (EXPERIMENT_KIND_TAG) so that MLflow's UI opens it on runs and charts, with
    the runs table's columns of VIEW_STATE."""
    tags = {EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT, VIEW_TAG: VIEW_STATE}
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location(uri, name), tags=tags)
    for key, value in tags.items():
        if experiment.tags.get(key) != value:  # a store from before the tag, or an older view
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def runs_view_url(server: str, experiment: str) -> str:
    """The MLflow UI page of an experiment's runs as charts in the model-training view, with VIEW_STATE."""
    return (f"{server.rstrip('/')}/#/experiments/{experiment}/runs?workflowType=machine_learning"
            f"&compareRunsMode=CHART&viewStateShareKey={VIEW_KEY}")


def main(argv=None) -> int:
    """`python -m jobs.tracking url [--port 5000] [--experiment cest]`: the page to open in `make mlflow-ui`."""
    import argparse

    from mlflow.tracking import MlflowClient

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["url"])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    args = parser.parse_args(argv)
    uri = tracking_uri()
    client = MlflowClient(uri)
    if client.get_experiment_by_name(args.experiment) is None:
        print(f"http://127.0.0.1:{args.port}/  (no experiment {args.experiment!r} in {uri} yet: run `make demo`)")
        return 0
    # experiment_id also marks a store from before the kind and view tags.
    print(runs_view_url(f"http://127.0.0.1:{args.port}", experiment_id(client, uri, args.experiment)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

