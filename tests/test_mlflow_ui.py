"""The MLflow UI on the project's store: experiments open as model development, on runs and charts, with an
ablation's children side by side (issue 19).

MLflow 3.17 reads the GenAI / model-training switch from the page's URL (else it opens on GenAI), so
`make mlflow-ui` prints the page with it (`jobs.tracking.runs_view_url`); the experiment tag is set too. The
page also names the shared view the experiment carries: runs grouped by ablation (else MLflow folds the
children under their parent run and charts none of them) and the runs table's columns.
The browser checks start `mlflow ui` on a free local port over a store this test writes, as the training and
evaluation jobs log, and load the page `make mlflow-ui` prints in headless Chromium (tests/mlflow_browser.py;
skipped where no `chromium` is installed)."""

import json
import re

import pytest
from mlflow.tracking import MlflowClient

from jobs import tracking
from mlflow_browser import BROWSER, load_page, mlflow_ui

HEADLINE_SCORES = {"cest": 9.25, "iest": 11.75}  # eval/aflw2000_nme68_pct of each child


@pytest.fixture
def store(mlflow_store):
    """An ablation run with its CEST and IEST children: learning curves in train/ and health/, the headline
    score in eval/, tags as jobs/train.py and jobs/ablations.py set them."""
    uri = mlflow_store
    client = MlflowClient(uri)
    experiment = tracking.experiment_id(client, uri, "cest")
    parent = client.create_run(experiment, run_name="demo", tags={tracking.ROLE_TAG: tracking.ABLATIONS_ROLE})
    for variant, start in (("cest", 0.9), ("iest", 1.1)):
        run = client.create_run(experiment, run_name=f"demo-{variant}", tags={
            tracking.VARIANT_TAG: variant, tracking.ABLATION_TAG: variant, "mlflow.parentRunId": parent.info.run_id})
        for step in range(1, 4):
            client.log_metric(run.info.run_id, f"{tracking.TRAIN}total", start / step, step=step)
            client.log_metric(run.info.run_id, f"{tracking.HEALTH}shading_std", start / step / 10, step=step)
        client.log_metric(run.info.run_id, "eval/aflw2000_nme68_pct", HEADLINE_SCORES[variant])
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return uri, client, experiment


def test_experiments_are_created_and_marked_as_model_development(store, tmp_path):
    uri, client, experiment = store
    assert client.get_experiment(experiment).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_DEVELOPMENT
    older = client.create_experiment("made-before-the-tag")  # a store written by an earlier version
    assert tracking.experiment_id(client, uri, "made-before-the-tag") == older
    assert client.get_experiment(older).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_DEVELOPMENT
    view = json.loads(client.get_experiment(older).tags[tracking.VIEW_TAG])
    assert view["groupBy"] == "tag.average.cest.ablation"
    assert view["selectedColumns"][:3] == ["tags.`cest.variant`", "tags.`cest.ablation`",
                                           "metrics.`eval/aflw2000_nme68_pct`"]
    assert tracking.runs_view_url("http://h:1", "7").endswith("/#/experiments/7/runs?workflowType=machine_learning"
                                                             "&compareRunsMode=CHART&viewStateShareKey=cest")


def test_evaluation_numbers_go_to_their_benchmark_section_and_headlines_to_eval():
    assert tracking.eval_metric_names("aflw2000_oracle_nme68_pct_0_30") == ["eval/aflw2000/oracle_nme68_pct_0_30"]
    assert tracking.eval_metric_names("aflw2000_oracle_nme68_pct_balanced") == [
        "eval/aflw2000/oracle_nme68_pct_balanced", "eval/aflw2000_nme68_pct"]
    assert tracking.eval_metric_names("photometric_mae_face") == ["eval/photometric/mae_face", "eval/photometric_mae"]
    assert tracking.eval_metric_names("now_median_mm") == ["eval/now/median_mm"]


def visible_text(dom: str) -> list[str]:
    """The page's text nodes, in order (scripts and styles left out)."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)
    return [text.strip() for text in re.split(r"<[^>]*>", dom) if text.strip()]


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no chromium browser installed (apt install chromium)")
def test_the_printed_page_shows_cest_beside_iest_in_a_browser(store, tmp_path):
    uri, _, experiment = store
    with mlflow_ui(uri) as server:
        page = tracking.runs_view_url(server, experiment)
        charts = visible_text(load_page(page, tmp_path / "charts"))
        table = visible_text(load_page(page.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"),
                                       tmp_path / "table"))
    # The model-training side bar (the GenAI one lists judges, prompts and traces instead of the registry).
    assert "Model registry" in charts and "Judges" not in charts and "Detect Issues" not in charts
    # Both children listed, one group each, not folded under their parent.
    assert {"demo-cest", "demo-iest", "Group: cest", "Group: iest"} <= set(charts)
    # The chart sections by metric prefix, in alphabetical order, and the curves named by ablation.
    sections = [text for text in charts if text in ("eval", "health", "train")]
    assert sections == ["eval", "health", "train"]
    assert {"cest", "iest"} <= set(charts)  # the charts' legends
    # The runs table: variant, ablation and the headline score as columns, with each child's score (the grid
    # draws the pinned run names apart from the other cells, so rows are not read across).
    assert {"cest.variant", "cest.ablation", "eval/aflw2000_nme68_pct"} <= set(table)
    assert {"demo-cest", "demo-iest"} <= set(table)
    assert {str(score) for score in HEADLINE_SCORES.values()} <= set(table)
