"""jobs.eval on the AFLW2000 sample and real pipeline frames, with models trained in the test, logged to MLflow."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import ray

from cest.assets import fetch_dir
from cest.config import save_config
from cest.eval.metrics import landmark_nme
from cest.morphable import load_sfm
from jobs import eval as evaluation
from jobs.tracking import ABLATION_TAG, ABLATIONS_ROLE, CHECKPOINT_ARTIFACT, CONFIG_ARTIFACT, ROLE_TAG, VARIANT_TAG
from sample_assets import missing_model_error, unreachable_landmark_models
from small_model import train_small_checkpoint



@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, sample_frames):
    """Two small models (CEST and IEST), two training steps each on real pipeline frames."""
    morphable = load_sfm()
    paths = {}
    for variant in ("cest", "iest"):
        paths[variant] = train_small_checkpoint(tmp_path_factory.mktemp(variant), morphable, sample_frames, variant, 2)
    return paths


@pytest.fixture
def tracking(tmp_path, mlflow_store, checkpoints):
    """A SQLite MLflow store holding an ablation parent with the two training runs as children, as the
    training job logs them (jobs/tracking.py: checkpoint/checkpoint.pt, config.yaml, cest.* tags)."""
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("cest", str(tmp_path / "artifacts")))
    children = {}
    with mlflow.start_run(run_name="ablations", tags={ROLE_TAG: ABLATIONS_ROLE}) as parent:
        for variant, (path, config) in checkpoints.items():
            with mlflow.start_run(run_name=variant, nested=True, tags={VARIANT_TAG: variant, ABLATION_TAG: variant}) as run:
                mlflow.log_artifact(str(path), artifact_path=CHECKPOINT_ARTIFACT.rsplit("/", 1)[0])
                save_config(config, tmp_path / CONFIG_ARTIFACT)
                mlflow.log_artifact(str(tmp_path / CONFIG_ARTIFACT))
                children[variant] = run.info.run_id
    return parent.info.run_id, children


def test_aflw2000_and_photometric_scores_land_in_each_ablation_run(tmp_path, tracking):
    parent, children = tracking
    aflw = fetch_dir("aflw2000_sample")
    output = tmp_path / "eval"
    assert evaluation.main(["--latest-ablations", "--aflw2000", str(aflw), "--images", str(aflw),
                            "--output", str(output)]) == 0
    results = json.loads((output / "metrics.json").read_text())
    # Rows are named by run name and id prefix: which variant each row is shows in the table.
    assert set(results) == {f"{variant}-{run_id[:8]}" for variant, run_id in children.items()}
    for label, metrics in results.items():
        run_id = metrics["mlflow_run_id"]
        # The sample's yaws: five images in 0-30, two in 30-60, one above 60.
        assert (metrics["aflw2000_oracle_nme68_count_0_30"], metrics["aflw2000_oracle_nme68_count_30_60"],
                metrics["aflw2000_oracle_nme68_count_60_90"]) == (5, 2, 1)
        bins = [metrics[f"aflw2000_oracle_nme68_pct_{b}"] for b in ("0_30", "30_60", "60_90")]
        assert metrics["aflw2000_oracle_nme68_pct_balanced"] == pytest.approx(np.mean(bins))
        # A barely trained model draws the mean face in the crop's framing, centred near the eyes: about 20 %.
        assert 5.0 < metrics["aflw2000_oracle_nme68_pct_mean"] < 40.0
        assert 0 < metrics["photometric_mae_face"] < 255 and metrics["photometric_mae_crop"] < metrics["photometric_mae_face"]
        logged = mlflow.MlflowClient().get_run(run_id)
        # In its benchmark's section, and the headline scores again as one-value columns of the runs table.
        assert logged.data.metrics["eval/aflw2000/oracle_nme68_pct_balanced"] == pytest.approx(
            metrics["aflw2000_oracle_nme68_pct_balanced"])
        assert logged.data.metrics["eval/aflw2000_nme68_pct"] == pytest.approx(metrics["aflw2000_oracle_nme68_pct_balanced"])
        assert logged.data.metrics["eval/photometric_mae"] == pytest.approx(metrics["photometric_mae_face"])
        assert logged.data.metrics["eval/photometric/mae_crop"] == pytest.approx(metrics["photometric_mae_crop"])
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "eval")}
        assert {"eval/metrics.json", "eval/comparison.md", "eval/ced_oracle.png"} <= artifacts
    table = (output / "comparison.md").read_text()
    assert all(f"| {variant}-{run_id[:8]} |" in table for variant, run_id in children.items())
    assert (output / "ced_detected.png").stat().st_size > 0
    # The ablation parent holds the comparison: the same table as a page, a row per child with its score.
    client = mlflow.MlflowClient()
    assert {"comparison/evaluation.html", "comparison/comparison.md", "comparison/ced_oracle.png"} <= {
        a.path for a in client.list_artifacts(parent, "comparison")}
    page = Path(client.download_artifacts(parent, "comparison/evaluation.html", str(tmp_path))).read_text()
    for label, metrics in results.items():
        assert f"<td>{label}</td><td>{metrics['aflw2000_oracle_nme68_pct_balanced']:.2f}</td>" in page


def test_oracle_nme_is_the_model_landmarks_scored_by_hand(checkpoints):
    """The scorer's NME equals cest.eval.metrics on landmarks mapped back by hand from the model's crop."""
    path, _ = checkpoints["cest"]
    item = evaluation.aflw2000_items(fetch_dir("aflw2000_sample"))[0]
    row = evaluation.prepare_aflw2000(item)
    scores = evaluation.score_local([row], path, batch_size=1)
    reconstructor = evaluation.Reconstructor(path)
    images = evaluation.model_images(row["oracle_crop"][None], 64)
    landmarks = reconstructor.estimate(images).landmarks[0, :, :2].double().numpy()
    matrix = row["oracle_matrix"].astype(np.float64) * 64 / 224
    in_source = np.linalg.solve(matrix[:, :2], (landmarks - matrix[:, 2]).T).T
    assert scores["oracle_nme68"][0] == pytest.approx(landmark_nme(in_source, row["gt"]), rel=1e-6)


@pytest.mark.slow
def test_ray_batch_inference_gives_the_local_scores(ray_local, checkpoints):
    path, _ = checkpoints["iest"]
    items = evaluation.aflw2000_items(fetch_dir("aflw2000_sample"))[:4]
    local = evaluation.score_local([evaluation.prepare_aflw2000(i) for i in items], path, batch_size=2)
    distributed = evaluation.score_ray(items, evaluation.prepare_aflw2000, path, batch_size=2)
    order = np.argsort(distributed["name"])
    assert distributed["name"][order].tolist() == local["name"].tolist()
    assert np.allclose(distributed["oracle_nme68"][order], local["oracle_nme68"], rtol=1e-5)
    assert np.allclose(distributed["oracle_photometric_face"][order], local["oracle_photometric_face"], rtol=1e-5)


def test_dense_nme_of_a_ground_truth_that_is_the_prediction_is_zero(tmp_path, checkpoints):
    """--bfm-dir plumbing on BFM files the test writes: a 'BFM' whose mean is the model's own prediction of
    the image (in the 3DDFA frame, frontal unit pose, zero coefficients) scores 0, and its self-test passes."""
    from scipy.io import savemat

    path, _ = checkpoints["cest"]
    row = evaluation.prepare_aflw2000(evaluation.aflw2000_items(fetch_dir("aflw2000_sample"))[0])
    scorer = evaluation.Scorer(str(path))
    images = evaluation.model_images(row["oracle_crop"][None], 64)
    estimate = scorer.reconstructor.estimate(images)
    back = evaluation.invert_affine(evaluation.to_model_pixels(row["oracle_matrix"][None].astype(np.float64), 64))[0]
    pixels = estimate.faces.pixels[0].double().numpy()
    image_xy = pixels[:, :2] @ back[:, :2].T + back[:, 2]
    image_z = -pixels[:, 2] * np.sqrt(abs(np.linalg.det(back[:, :2])))
    height = row["height"]
    bfm_frame = np.stack([image_xy[:, 0] + 0.5, height + 0.5 - image_xy[:, 1], image_z], 1)  # undo the image frame
    savemat(tmp_path / "01_MorphableModel.mat", {"shapeMU": bfm_frame.reshape(-1, 1),
                                                 "shapePC": np.zeros((bfm_frame.size, 199)), "shapeEV": np.ones((199, 1))})
    savemat(tmp_path / "Model_Expression.mat", {"w_exp": np.zeros((bfm_frame.size, 29))})
    landmark_indices = scorer.reconstructor.model.morphable.landmark_indices.numpy()
    np.savetxt(tmp_path / "keypoints.txt", landmark_indices, fmt="%d")
    row.update(shape_para=np.zeros(199), exp_para=np.zeros(29), pose_para=np.array([0, 0, 0, 0, 0, 0, 1.0]),
               pt3d_68=np.concatenate([bfm_frame[landmark_indices].T[:1], bfm_frame[landmark_indices].T[1:2],
                                       bfm_frame[landmark_indices].T[2:]]))
    row["pt3d_68"][1] = height + 1 - row["pt3d_68"][1]  # pt3d_68 rows are image rows (1-based), not BFM y
    scores = evaluation.score_local([row], path, batch_size=1, bfm_dir=tmp_path)
    assert scores["oracle_dense_selftest_px"][0] < 1e-6
    assert scores["oracle_dense_nme"][0] < 1e-6
    metrics = evaluation.summarise(scores)
    assert metrics["aflw2000_oracle_dense_nme_count_0_30"] == 1 and "ICP" in metrics["aflw2000_dense_method"]


def test_photometric_error_over_a_preprocess_output(tmp_path, checkpoints, sample_clips):
    """--clips: every frame of a real preprocess output (the first sample clip), scored on the pipeline's own crops."""
    from bad_clips import write_rows

    clips = sample_clips[1][:1]
    (tmp_path / "clips").mkdir()
    write_rows(tmp_path / "clips" / "part-0.parquet", clips)
    frames = evaluation.clip_frame_rows(tmp_path)
    assert len(frames) == sum(clip["num_frames"] for clip in clips)
    path, _ = checkpoints["cest"]
    metrics = evaluation.summarise(evaluation.score_local(frames, path, batch_size=4))
    assert metrics["photometric_images"] == len(frames) and metrics["photometric_missed"] == 0
    assert 0 < metrics["photometric_mae_crop"] < metrics["photometric_mae_face"] < 255


def test_a_bare_checkpoint_gets_an_evaluation_run_and_the_published_model_scores_as_its_card(
        tmp_path, mlflow_store, checkpoints):
    """`jobs.eval --checkpoint`: models/cest_cpu.pt scores the NME its card gives (12.65 % oracle, balanced;
    the default detector finds all 8 faces), beats a barely trained model, and each checkpoint gets a new MLflow run
    tagged as an evaluation; --limit keeps the first N photos."""
    from mlflow.tracking import MlflowClient

    from cest.checkpoint import PUBLISHED_MODEL, load_model, save_checkpoint
    from jobs.tracking import EVALUATION_RUN_TAG, TRAINING_RUN_TAG, experiment_id

    uri = mlflow_store
    # A checkpoint of a training run in this store: its evaluation run and the training run name each other.
    training_run = MlflowClient(uri).create_run(experiment_id(MlflowClient(uri), uri, "cest")).info.run_id
    model, config, _ = load_model(checkpoints["cest"][0])
    barely_trained = save_checkpoint(tmp_path / "trained", model, config, mlflow_run_id=training_run)
    aflw = fetch_dir("aflw2000_sample")
    assert evaluation.main(["--checkpoint", str(PUBLISHED_MODEL), "--checkpoint", str(barely_trained),
                            "--aflw2000", str(aflw), "--output", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    published, barely = results[str(PUBLISHED_MODEL)], results[str(barely_trained)]
    assert published["aflw2000_oracle_nme68_pct_balanced"] == pytest.approx(12.65, abs=0.05)
    assert published["aflw2000_oracle_nme68_pct_balanced"] < barely["aflw2000_oracle_nme68_pct_balanced"] - 5
    # The default detector (mediapipe) finds all 8 faces, the two profiles included (dlib found 5).
    assert published["aflw2000_detected_missed"] == 0 and published["aflw2000_oracle_missed"] == 0
    assert sum(published[f"aflw2000_detected_nme68_count_{b}"] for b in ("0_30", "30_60", "60_90")) == 8
    assert published["aflw2000_detected_nme68_pct_0_30"] < 10  # measured 8.0 %
    client = MlflowClient(uri)
    run = client.get_run(published["mlflow_run_id"])
    assert run.data.tags[ROLE_TAG] == evaluation.EVALUATION_ROLE and run.data.params["checkpoint"] == str(PUBLISHED_MODEL)
    # Its own group in the UI's runs view, named by the file, apart from the other checkpoint's.
    assert (run.info.run_name, run.data.tags[ABLATION_TAG]) == ("eval models/cest_cpu.pt", "models/cest_cpu.pt")
    assert run.data.metrics["eval/aflw2000/oracle_nme68_pct_balanced"] == pytest.approx(
        published["aflw2000_oracle_nme68_pct_balanced"])
    assert run.data.tags[TRAINING_RUN_TAG] == load_model(PUBLISHED_MODEL)[2]["mlflow_run_id"]  # trained elsewhere
    evaluation_of_trained = client.get_run(barely["mlflow_run_id"])
    assert evaluation_of_trained.data.tags[TRAINING_RUN_TAG] == training_run
    assert client.get_run(training_run).data.tags[EVALUATION_RUN_TAG] == barely["mlflow_run_id"]
    assert evaluation.main(["--checkpoint", str(PUBLISHED_MODEL), "--aflw2000", str(aflw), "--limit", "3",
                            "--no-mlflow", "--output", str(tmp_path / "limited")]) == 0
    limited = json.loads((tmp_path / "limited" / "metrics.json").read_text())[str(PUBLISHED_MODEL)]
    assert sum(limited[f"aflw2000_oracle_nme68_count_{b}"] for b in ("0_30", "30_60", "60_90")) == 3


def test_a_landmark_model_that_cannot_be_fetched_is_one_error_line(tmp_path, monkeypatch, capsys):
    """AFLW2000-3D (detected crops) on a machine without network whose mirror lacks the landmark model files: one
    line naming the file and where a mirror holds it, exit status 2, before any model runs."""
    from cest.checkpoint import PUBLISHED_MODEL

    aflw = fetch_dir("aflw2000_sample")
    place = unreachable_landmark_models(monkeypatch, tmp_path)
    error = missing_model_error(evaluation.main, ["--checkpoint", str(PUBLISHED_MODEL), "--aflw2000", str(aflw),
                                                  "--no-mlflow", "--output", str(tmp_path / "eval")], capsys)
    assert len(error.splitlines()) == 1, error
    assert error.startswith("error: asset 'mediapipe/face_detection_short_range.tflite'"), error
    assert str(place) in error and not (tmp_path / "eval").exists()


def test_clips_with_bad_files_and_rows_are_scored_on_the_readable_ones(tmp_path, checkpoints, sample_clips, capsys):
    """--clips over a corpus holding a truncated file, a file of another schema, undecodable and NaN rows: the
    readable frames are scored, the others listed in skipped.jsonl; past the bound, or with nothing readable, the
    job is one error line (exit status 2)."""
    from bad_clips import broken_corpus, broken_rows, truncate, write_other_schema

    data, rows = sample_clips
    expected = broken_corpus(tmp_path / "broken", data, rows)
    short = broken_rows(rows[0])["fewer than the"]
    del expected[next(key for key in expected if key.endswith(short["segment_key"]))]  # one frame is enough here
    path, _ = checkpoints["cest"]
    args = ["--checkpoint", str(path), "--clips", str(tmp_path / "broken"), "--no-mlflow", "--batch-size", "8"]
    assert evaluation.main(args + ["--output", str(tmp_path / "eval"), "--max-skipped-fraction", "0.6"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())[str(path)]
    readable = sum(row["num_frames"] for row in rows) + short["num_frames"] + rows[1]["num_frames"]
    assert metrics["photometric_images"] == readable
    listed = [json.loads(line) for line in (tmp_path / "eval" / "skipped.jsonl").read_text().splitlines()]
    named = {f"{entry['file']}/{entry['segment_key']}".rstrip("/"): entry["reason"] for entry in listed}
    assert set(named) == set(expected) and all(expected[key] in named[key] for key in expected)

    capsys.readouterr()
    assert evaluation.main(args + ["--output", str(tmp_path / "eval_bound")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "above data.max_skipped_fraction 1.0%" in errors[0]

    (tmp_path / "none" / "clips").mkdir(parents=True)
    truncate(sorted((data / "clips").glob("*.parquet"))[0], tmp_path / "none" / "clips" / "a.parquet")
    write_other_schema(tmp_path / "none" / "clips" / "b.parquet")
    assert evaluation.main(["--checkpoint", str(path), "--clips", str(tmp_path / "none"), "--no-mlflow",
                            "--output", str(tmp_path / "eval_none")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "none of its 2 clip files is readable" in err[0]
