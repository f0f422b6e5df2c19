"""Finding trained models in MLflow (jobs/tracking.py conventions): checkpoints of runs, ablation children."""

import tempfile
from pathlib import Path

from jobs.tracking import ABLATIONS_ROLE, CHECKPOINT_ARTIFACT, DEFAULT_EXPERIMENT, ROLE_TAG, tracking_uri


class RunError(ValueError):
    """An MLflow run that does not exist or has no checkpoint artifact."""


def client():
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri())


def run_label(run_id: str) -> str:
    """What tables and file names call a run: its name and the start of its id (names may repeat)."""
    return f"{client().get_run(run_id).info.run_name}-{run_id[:8]}"


def download_checkpoint(run_id: str, directory: str | Path | None = None) -> Path:
    """The run's `checkpoint/checkpoint.pt`, downloaded into `directory` (a new temporary one by default)."""
    import mlflow

    directory = Path(directory or tempfile.mkdtemp(prefix=f"cest-{run_id[:8]}-"))
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                   dst_path=str(directory), tracking_uri=tracking_uri())
    except Exception as error:  # MlflowException / OSError: one line for the user
        raise RunError(f"run {run_id}: no {CHECKPOINT_ARTIFACT} artifact ({type(error).__name__}: "
                       f"{str(error).splitlines()[0][:200]})") from None
    return Path(path)


def latest_ablation_children(experiment: str = DEFAULT_EXPERIMENT) -> tuple[str, list[str]]:
    """(parent run id, its children's run ids) of the most recent run tagged cest.role=ablations."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        raise RunError(f"no MLflow experiment {experiment!r} at {tracking_uri()}")
    parents = mlflow_client.search_runs([found.experiment_id], f"tags.`{ROLE_TAG}` = '{ABLATIONS_ROLE}'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise RunError(f"no ablation run (tag {ROLE_TAG}={ABLATIONS_ROLE}) in experiment {experiment!r}")
    parent = parents[0].info.run_id
    children = mlflow_client.search_runs([found.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                         order_by=["attributes.start_time ASC"])
    if not children:
        raise RunError(f"ablation run {parent} has no child runs")
    return parent, [child.info.run_id for child in children]
