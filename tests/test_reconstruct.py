"""Photo and video -> textured mesh, overlay, preview and parameters, with a small checkpoint trained here."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import trimesh

from cest.assets import fetch
from cest.render.camera import project
from cest.export import write_textured_mesh
from jobs.face_reconstruction import crop_with_landmarks, invert_affine
from jobs.reconstruct import main
from jobs.render_photo import read_pts
from small_model import train_small_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, morphable, sample_frames):
    """A small CEST model after three real training steps on pipeline frames, saved as users get it."""
    return train_small_checkpoint(tmp_path_factory.mktemp("ckpt"), morphable, sample_frames, "cest", 3)[0]


def test_textured_mesh_reads_back_with_its_uv_map_and_texture(tmp_path, morphable):
    vertices = morphable.mean_shape.numpy()
    texture = np.zeros((32, 32, 3), np.uint8)
    texture[:16] = (200, 100, 50)  # top half of the UV map (v < 0.5, our v-down convention)
    files = write_textured_mesh(tmp_path, "face", vertices, morphable.triangles.numpy(), morphable.uv.numpy(), texture)
    for mesh in (trimesh.load(files.obj, process=False), trimesh.load(files.glb, force="mesh", process=False)):
        assert mesh.vertices.shape == (morphable.n_vertices, 3)
        assert len(mesh.faces) == len(morphable.triangles)
        assert mesh.visual.uv.shape == (morphable.n_vertices, 2)
        # OBJ/glTF v runs up: ours is 1 - v; the loaded texture is the one written.
        assert np.allclose(mesh.visual.uv[:, 1], 1 - morphable.uv.numpy()[:, 1], atol=1e-6)
        material = mesh.visual.material
        image = material.image if hasattr(material, "image") else material.baseColorTexture
        assert np.array_equal(np.asarray(image.convert("RGB")), texture)
    assert np.allclose(trimesh.load(files.obj, process=False).vertices, vertices, atol=1e-6)
    assert "map_Kd face.png" in files.mtl.read_text()


def test_crop_follows_the_pipeline_alignment_and_inverts(morphable):
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3)), np.uint8)
    landmarks = read_pts(fetch("landmarks68/eos_image_0010.pts"))
    crops = crop_with_landmarks(image, landmarks)
    assert crops.crops.shape == (1, 224, 224, 3)
    back = invert_affine(crops.matrices)[0]
    eyes = landmarks[36:48].mean(0)
    in_crop = crops.matrices[0, :, :2] @ eyes + crops.matrices[0, :, 2]
    assert np.allclose(back[:, :2] @ in_crop + back[:, 2], eyes, atol=1e-3)
    assert 60 < in_crop[1] < 112  # eyes in the upper half of the aligned crop, as in the training crops


def test_reconstruct_a_photo(tmp_path, checkpoint, morphable):
    output = tmp_path / "out"
    photo = fetch("landmarks68/eos_image_0010.png")
    assert main([str(photo), "--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    for name in ("face.obj", "face.mtl", "face.png", "face.glb", "overlay.png", "preview.png", "parameters.json"):
        assert (output / name).stat().st_size > 0, name
    mesh = trimesh.load(output / "face.glb", force="mesh", process=False)
    assert mesh.vertices.shape == (3448, 3)
    params = json.loads((output / "parameters.json").read_text())
    assert len(params["viewpoint"]) == 7 and len(params["sh"]) == 9 and len(params["alpha_identity"]) == 63
    # Three training steps leave the model at its initial estimate: the mean face, frontal, at scale
    # init_scale, centred in the crop. Its landmarks in the photo, mapped into the model's input by the
    # written transform, must be exactly there; and in the photo they cover the annotated face's extent.
    expected = project(morphable.mean_shape[None], torch.tensor([[0.6, 0, 0, 0, 0, 0, 0.0]]), 64)
    expected = expected[0, morphable.landmark_indices, :2].numpy()
    predicted = np.asarray(params["landmarks_source"])
    to_input = np.asarray(params["source_to_model_input"])
    in_input = predicted @ to_input[:, :2].T + to_input[:, 2]
    assert np.abs(in_input - expected).mean() < 1.0
    annotated = read_pts(fetch("landmarks68/eos_image_0010.pts"))
    assert 0.8 < predicted[17:].std(0).mean() / annotated[17:].std(0).mean() < 1.25


def test_reconstruct_a_video_with_smoothing(tmp_path, checkpoint):
    import av

    video = fetch("voxceleb_sample/id10001/pcavs00015/00001.mp4")
    output = tmp_path / "video"
    assert main([str(video), "--checkpoint", str(checkpoint), "--output", str(output), "--max-frames", "12",
                 "--smooth", "2"]) == 0
    table = pq.read_table(output / "parameters.parquet").to_pydict()
    assert len(table["frame_index"]) == 12 and table["frame_index"] == sorted(table["frame_index"])
    viewpoints = np.array(table["viewpoint"])
    assert viewpoints.shape == (12, 7)
    with av.open(str(output / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 12
    # Smoothing over time: the frame-to-frame change of the parameters is smaller than without it.
    raw = tmp_path / "raw"
    assert main([str(video), "--checkpoint", str(checkpoint), "--output", str(raw), "--max-frames", "12"]) == 0
    raw_viewpoints = np.array(pq.read_table(raw / "parameters.parquet").column("viewpoint").to_pylist())
    assert np.abs(np.diff(viewpoints, axis=0)).sum() < np.abs(np.diff(raw_viewpoints, axis=0)).sum()


def test_bad_inputs_are_one_line_errors(tmp_path, checkpoint, capsys):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    cases = [
        ([str(blank), "--checkpoint", str(checkpoint)], "no face"),
        ([str(broken), "--checkpoint", str(checkpoint)], "cannot read"),
        ([str(blank), "--checkpoint", str(tmp_path / "missing")], "no checkpoint"),
        ([str(tmp_path / "notes.txt"), "--checkpoint", str(checkpoint)], "no file"),
    ]
    for argv, message in cases:
        assert main(argv + ["--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def aflw_nme(output, name: str) -> float:
    """68-landmark NME of a reconstruction against the AFLW2000-3D annotation (3DDFA normalisation)."""
    from scipy.io import loadmat

    truth = loadmat(fetch(f"aflw2000_sample/{name}.mat"))["pt3d_68"][:2].T
    predicted = np.asarray(json.loads((output / "parameters.json").read_text())["landmarks_source"])
    width, height = truth.max(0) - truth.min(0)
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / np.sqrt(width * height))


def test_the_published_model_is_the_default_and_places_landmarks_better_than_the_mean_face(tmp_path, checkpoint):
    """models/cest_cpu.pt (models/README.md) reconstructs without --checkpoint; on a near-frontal AFLW2000-3D
    photo its landmarks are within 5 % (measured 3.2 %), less than half the untrained model's mean face."""
    from cest.checkpoint import PUBLISHED_MODEL

    photo = fetch("aflw2000_sample/image00050.jpg")
    assert main([str(photo), "--output", str(tmp_path / "published")]) == 0
    assert json.loads((tmp_path / "published" / "parameters.json").read_text())["checkpoint"] == str(PUBLISHED_MODEL)
    assert main([str(photo), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "mean")]) == 0
    published, mean_face = aflw_nme(tmp_path / "published", "image00050"), aflw_nme(tmp_path / "mean", "image00050")
    assert published < 0.05 and published < 0.5 * mean_face, (published, mean_face)


def test_the_mesh_and_texture_written_are_the_estimate(tmp_path, morphable):
    """face.obj holds the estimated shape (the morphable model of the written coefficients, not the mean face)
    and face.png the estimated reflectance (not the illuminated texture), for the published model."""
    import cv2

    from cest.checkpoint import PUBLISHED_MODEL
    from jobs.face_reconstruction import Reconstructor, crop_photo, model_images, read_image
    from cest.visualize import to_uint8

    photo = fetch("aflw2000_sample/image00050.jpg")
    assert main([str(photo), "--output", str(tmp_path)]) == 0
    params = json.loads((tmp_path / "parameters.json").read_text())
    shape = morphable.shape(torch.tensor([params["alpha_identity"]]), torch.tensor([params["alpha_expression"]]))[0]
    written = trimesh.load(tmp_path / "face.obj", process=False).vertices
    assert np.allclose(written, shape.numpy(), atol=1e-5)
    moved_mm = (shape - morphable.mean_shape).norm(dim=-1).mean() * float(morphable.unit_scale_mm)
    assert moved_mm > 0.5, moved_mm  # the estimate is not the mean face, so the check above can tell them apart
    reconstructor = Reconstructor(PUBLISHED_MODEL, morphable=morphable)
    estimate = reconstructor.estimate(model_images(crop_photo(read_image(photo)).crops, reconstructor.image_size))
    texture = cv2.cvtColor(cv2.imread(str(tmp_path / "face.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(texture, to_uint8(estimate.reflectance)[0])
