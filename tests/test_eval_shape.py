"""jobs.eval's shape benchmarks end to end on folders laid out as MICC Florence and NoW, built from the sample
assets (a VoxCeleb clip as every MICC video, an AFLW2000 photo as a NoW image) with the SFM's mean face as the
scan, and a small model trained in the test; the missing-folder error; Ray Data reconstruction (--ray) against
the in-process one."""

import json

import cv2
import mlflow
import numpy as np
import pytest
import ray
import torch
import trimesh

from cest.assets import fetch, fetch_dir
from cest.checkpoint import save_checkpoint
from cest.config import Config, ModelConfig
from cest.eval.files import read_mesh, write_obj
from cest.eval.realy import keypoints_from_barycentric, read_barycentric, vertex_rows, write_barycentric
from cest.eval.now import LANDMARKS
from cest.model import CESTModel
from cest.morphable import load_sfm
from cest.render.uv import uv_to_grid
from cest.synthetic import procedural_reflectance
from jobs import eval as evaluation
from jobs.eval_shape import ShapeInputs, shape_benchmarks
from jobs.face_reconstruction import Reconstructor, write_overlay_video
from small_model import SMALL, train_small_checkpoint


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def mean_face_mm():
    morphable = load_sfm()
    vertices = morphable.mean_shape.double().numpy() * morphable.unit_scale_mm
    return vertices, morphable.triangles.numpy(), morphable.landmark_indices.numpy()


def skin_colours() -> np.ndarray:
    """(N, 3) colours of the SFM's vertices: a procedural skin with lips and brows (cest.synthetic)."""
    morphable = load_sfm()
    reflectance = procedural_reflectance(morphable, 256, torch.Generator().manual_seed(0))
    grid = uv_to_grid(morphable.uv[None, :, None, :].float())
    return torch.nn.functional.grid_sample(reflectance[None], grid, align_corners=False)[0, :, :, 0].t().numpy()


def micc_folder(root):
    """One subject: the SFM's mean face, coloured, as the scan; the sample VoxCeleb clip as every video."""
    vertices, triangles, _ = mean_face_mm()
    video = fetch("voxceleb_sample/id10001/pcavs00015/00001.mp4")
    (root / "subject_01" / "Video").mkdir(parents=True)
    for setting in ("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor"):
        (root / "subject_01" / "Video" / f"{setting}.mp4").symlink_to(video)
    (root / "subject_01/Model/frontal1/obj").mkdir(parents=True)
    trimesh.Trimesh(vertices, triangles, vertex_colors=skin_colours(), process=False).export(
        root / "subject_01/Model/frontal1/obj/scan.obj")
    return root


def now_folder(root):
    vertices, triangles, landmarks = mean_face_mm()
    relative = "FaMoS_1/multiview_neutral/IMG_0050.jpg"
    root.mkdir()
    (root / "imagepathsvalidation.txt").write_text(relative + "\n")
    image = root / "NoW_Dataset/final_release_version/iphone_pictures" / relative
    image.parent.mkdir(parents=True)
    image.symlink_to(fetch_dir("aflw2000_sample") / "image00050.jpg")
    write_obj(root / "scans/FaMoS_1/scan.obj", vertices, triangles)
    points = "\n".join(f'<point x="{x}" y="{y}" z="{z}" name="{i}"/>'
                       for i, (x, y, z) in enumerate(vertices[landmarks[list(LANDMARKS)]]))
    (root / "scans_lmks_onlypp/FaMoS_1").mkdir(parents=True)
    (root / "scans_lmks_onlypp/FaMoS_1/scan.pp").write_text(f"<PickedPoints>\n{points}\n</PickedPoints>\n")
    return root


def realy_inputs(root):
    """One photo, and a 'REALY template' that is the SFM mean face in metres with 85 rows (68 landmarks + 17)."""
    vertices, triangles, landmarks = mean_face_mm()
    (root / "images").mkdir(parents=True)
    (root / "images" / "image00050.jpg").symlink_to(fetch_dir("aflw2000_sample") / "image00050.jpg")
    rows = np.concatenate([vertex_rows(triangles, landmarks), [[t, 0.2, 0.3] for t in range(0, 1700, 100)]])
    write_obj(root / "TEMPLATE.obj", vertices / 1000, triangles)
    write_barycentric(root / "TEMPLATE.txt", rows)
    return root / "images", root / "TEMPLATE.obj", keypoints_from_barycentric(vertices, triangles, rows)


def test_micc_now_and_realy_scores_tables_and_exports_land_in_the_run(tmp_path, mlflow_store, sample_frames):
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.create_experiment("cest", str(tmp_path / "artifacts"))  # artifacts in the test's folder, not ./mlruns
    checkpoint, _ = train_small_checkpoint(tmp_path / "model", load_sfm(), sample_frames, "cest", 2)
    output = tmp_path / "eval"
    images, template, keypoints = realy_inputs(tmp_path / "realy")
    micc = micc_folder(tmp_path / "micc")
    assert evaluation.main(["--checkpoint", str(checkpoint), "--micc", str(micc), "--micc-rendered", str(micc),
                            "--micc-frames", "4", "--now", str(now_folder(tmp_path / "now")), "--realy", str(images),
                            "--realy-template", str(template), "--output", str(output)]) == 0
    [metrics] = json.loads((output / "metrics.json").read_text()).values()
    # A barely trained model predicts close to the mean face, which is the scan: well under the 1-2 mm of
    # published methods on real scans, and not 0 (its identity coefficients are not exactly 0).
    for key in ("cooperative", "indoor", "outdoor"):
        assert 0 < metrics[f"micc_{key}_mean_mm"] < 1.0 and metrics[f"micc_{key}_subjects"] == 1
        assert metrics[f"micc_{key}_rmse_mm"] >= metrics[f"micc_{key}_mean_mm"]
    # The rendered protocol: 15 renderings of the scan; the detector finds at least the 9 within 40 degrees of
    # yaw (the +-80 profiles of a face without ears or hair may be missed); close to the mean face, far under
    # the paper's 3.14 %.
    assert metrics["micc_rendered_images"] + metrics["micc_rendered_missed"] == 15
    assert metrics["micc_rendered_images"] >= 9 and 0 < metrics["micc_rendered_nme"] < 1.0
    assert metrics["micc_rendered_nme_yaw_0"] < 1.0
    assert metrics["now_images"] == 1 and metrics["now_missed"] == 0 and 0 < metrics["now_median_mm"] < 1.0
    exported = output / "now_predictions" / str(checkpoint).replace("/", "_")[-48:] / "FaMoS_1/multiview_neutral"
    assert (exported / "IMG_0050.obj").is_file() and np.load(exported / "IMG_0050.npy").shape == (7, 3)
    table = (output / "comparison.md").read_text()
    assert "| CEST (paper) | 3.14 |" in table and (output / "ced_micc_rendered.png").stat().st_size > 0
    assert "MICC Florence" in table and "| DECA (Feng et al. 2021) | 1.09 | 1.38 | 1.18 |" in table
    assert (output / "ced_now.png").stat().st_size > 0 and (output / "ced_micc_cooperative.png").stat().st_size > 0
    # REALY: the photo's mesh in the SFM topology, the template, and a keypoint file that gives the template's points.
    realy = output / "realy" / str(checkpoint).replace("/", "_")[-48:]
    assert metrics["realy_exported"] == 1 and len(read_mesh(realy / "image00050.obj")[0]) == 3448
    template_vertices, template_triangles = read_mesh(realy / "SFM.obj")
    found = keypoints_from_barycentric(template_vertices, template_triangles, read_barycentric(realy / "SFM.txt"))
    assert np.abs(found - keypoints).max() < 2e-3  # 0.5 um measured: the template .obj in metres keeps 6 decimals
    logged = mlflow.MlflowClient().get_run(metrics["mlflow_run_id"]).data.metrics
    assert logged["eval/micc/cooperative_mean_mm"] == pytest.approx(metrics["micc_cooperative_mean_mm"])
    assert logged["eval/now/median_mm"] == pytest.approx(metrics["now_median_mm"])


@pytest.mark.parametrize("flag", ["--micc", "--micc-rendered", "--now", "--realy"])
def test_a_missing_folder_is_one_error_line_and_status_2(tmp_path, capsys, flag):
    assert evaluation.main(["--checkpoint", str(tmp_path / "none.pt"), flag, str(tmp_path / "absent"),
                            "--no-mlflow", "--output", str(tmp_path / "eval")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("error: ") and "absent" in error


def test_a_malformed_micc_folder_names_the_missing_video(tmp_path, capsys):
    root = micc_folder(tmp_path / "micc")
    (root / "subject_01/Video/PTZ-Outdoor.mp4").unlink()
    assert evaluation.main(["--checkpoint", str(tmp_path / "none.pt"), "--micc", str(root), "--no-mlflow",
                            "--output", str(tmp_path / "eval")]) == 2
    assert "subject_01/Video/PTZ-Outdoor" in capsys.readouterr().err


def test_the_rendered_protocol_needs_the_scans_only(tmp_path, capsys):
    root = micc_folder(tmp_path / "micc")
    for video in (root / "subject_01/Video").iterdir():
        video.unlink()
    inputs = ShapeInputs(micc_rendered=root)
    assert inputs.check() and [s.name for s in inputs.checked["micc_rendered"]] == ["subject_01"]
    (root / "subject_01/Model/frontal1/obj/scan.obj").unlink()
    assert evaluation.main(["--checkpoint", str(tmp_path / "none.pt"), "--micc-rendered", str(root), "--no-mlflow",
                            "--output", str(tmp_path / "eval")]) == 2
    assert "subject_01/Model/frontal1/obj" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_reconstruction_gives_the_in_process_scores_and_misses(tmp_path, ray_local):
    """The same inputs reconstructed in this process and by Ray Data batch inference (batches of 2 crops that mix
    videos and photos): the same per-subject and per-image scores and exports, the same misses. MICC: the sample
    clip as one setting, a grey video (no face) as the two others; NoW and REALY: a face photo and a grey one."""
    # An untrained model with wide heads: identity coefficients of about 0.5 (not 1e-5 as with the default
    # head_init_std), so that shapes differ from the mean face (the scans) and from each other.
    torch.manual_seed(0)
    config = Config(model=ModelConfig(**SMALL, head_init_std=30.0))
    checkpoint = save_checkpoint(tmp_path / "model", CESTModel(config.model, load_sfm()), config)
    micc = micc_folder(tmp_path / "micc")
    grey = np.full((4, 128, 128, 3), 128, np.uint8)
    for setting in ("PTZ-Indoor", "PTZ-Outdoor"):
        (micc / "subject_01/Video" / f"{setting}.mp4").unlink()
        write_overlay_video(micc / "subject_01/Video" / f"{setting}.mp4", grey, 25)
    now = now_folder(tmp_path / "now")
    relative = "FaMoS_1/multiview_neutral/IMG_0051.jpg"
    (now / "imagepathsvalidation.txt").write_text((now / "imagepathsvalidation.txt").read_text() + relative + "\n")
    cv2.imwrite(str(now / "NoW_Dataset/final_release_version/iphone_pictures" / relative), grey[0])
    images, _, _ = realy_inputs(tmp_path / "realy")
    cv2.imwrite(str(images / "grey.jpg"), grey[0])
    inputs = ShapeInputs(micc=micc, now=now, realy=images, micc_frames=4)
    assert inputs.check()
    reconstructor = Reconstructor(checkpoint)
    local, local_curves = shape_benchmarks(reconstructor, inputs, tmp_path / "local", "model")
    distributed, ray_curves = shape_benchmarks(reconstructor, inputs, tmp_path / "ray", "model", use_ray=True,
                                               batch_size=2)
    assert (local["micc_missed_videos"], local["now_missed"], local["realy_missed"]) == (2, 1, 1)
    assert (local["micc_cooperative_subjects"], local["now_images"], local["realy_exported"]) == (1, 1, 1)
    assert distributed.keys() == local.keys()
    assert all(distributed[key] == pytest.approx(local[key], rel=1e-5) for key in local)
    # Per subject (MICC's cooperative setting) and per scan vertex (NoW's distances of the one image).
    assert ray_curves.keys() == local_curves.keys() == {"micc_cooperative", "now"}
    for name in local_curves:
        assert np.allclose(ray_curves[name], local_curves[name], rtol=1e-5, atol=1e-6)
    assert local["micc_cooperative_mean_mm"] > 0.05 and local["now_median_mm"] > 0.05  # 0.10 and 0.26 measured
    exported = [read_mesh(tmp_path / mode / "realy/model/image00050.obj")[0] for mode in ("local", "ray")]
    assert np.abs(exported[0] - exported[1]).max() < 1e-4  # mm
