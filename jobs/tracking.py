"""MLflow conventions shared by training, ablations and evaluation (jobs/ only: cest/ never imports MLflow).

Store: `MLFLOW_TRACKING_URI` when set (a tracking server, or any store MLflow accepts), otherwise a SQLite
database at an absolute path in the project (`<repo>/mlflow.db`): Ray workers run in another working
directory, and MLflow 3 refuses the old ./mlruns file store.

Runs: one MLflow run per training run, in the experiment "cest" unless told otherwise. A training run logs
the resolved config as the artifact `config.yaml` and its final checkpoint as `checkpoint/checkpoint.pt`
(see cest.checkpoint). Tags: `cest.variant` (cest | iest), `cest.ablation` (the ablation's name, or
"none"), `cest.dataset`, `cest.git_commit`. An ablation sweep is a parent run tagged `cest.role=ablations`
whose children are training runs (MLflow's own `mlflow.parentRunId` tag links them).
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPERIMENT = "cest"
CHECKPOINT_ARTIFACT = "checkpoint/checkpoint.pt"
CONFIG_ARTIFACT = "config.yaml"
ROLE_TAG, ABLATIONS_ROLE = "cest.role", "ablations"
VARIANT_TAG, ABLATION_TAG, DATASET_TAG, COMMIT_TAG = "cest.variant", "cest.ablation", "cest.dataset", "cest.git_commit"


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
    """The id of experiment `name` in the store at `uri`, created with `artifact_location` if it is new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri, name))
