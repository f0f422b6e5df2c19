"""dlib's CNN face detector as the fallback where HOG finds no face, on AFLW2000-3D sample images.

Landmarks (68, 2) and boxes (x0, y0, x1, y1) in our pixel convention; the NME is cest.eval.metrics' (3DDFA protocol).
Measured values (benchmarks/bench_profile_landmarks.py) are in the comments beside each bound.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cest.eval.metrics import landmark_nme
from pipelines.landmarks import DlibLandmarker, box_iou, make_landmarker
from pipelines.preprocess import build_parser, config_from_args
from sample_assets import aflw2000_image, asset, truth_box


@pytest.fixture(scope="module")
def hog_only():
    return DlibLandmarker(upsample=1)


@pytest.fixture(scope="module")
def with_fallback():
    """The landmarker `python -m pipelines.preprocess --detector dlib --dlib-cnn-fallback` makes."""
    args = build_parser().parse_args(["--input", "in", "--output", "out", "--detector", "dlib", "--dlib-cnn-fallback"])
    return make_landmarker(config_from_args(args))


@pytest.mark.parametrize(
    "name, max_nme",
    [
        ("image00475", 0.30),  # yaw 65.6 degrees: measured NME 24.4% (the 68-point model's limit on profiles)
        ("image01038", 0.08),  # yaw 11.1 degrees, head tilted back: measured NME 5.9%
    ],
)
def test_fallback_finds_faces_that_hog_misses(hog_only, with_fallback, name, max_nme):
    image, truth, _ = aflw2000_image(name)
    assert len(hog_only.detect(image)) == 0
    boxes = with_fallback.detect(image)
    assert len(boxes) == 1
    assert box_iou(boxes[0], truth_box(truth)) > 0.5  # measured 0.63 and 0.60
    assert landmark_nme(with_fallback.landmarks(image, boxes)[0], truth) < max_nme


def test_fallback_confirms_a_turned_face_in_a_tracking_check(hog_only, with_fallback):
    """detect_near (the tracker's check every few frames) on a face at 55 degrees of yaw: HOG cannot confirm it,
    so without the fallback the track would end there."""
    image, truth, yaw = aflw2000_image("image00251")
    assert abs(yaw) > 50
    box = truth_box(truth).astype(np.float32)
    assert hog_only.detect_near(image, box) is None
    confirmed = with_fallback.detect_near(image, box)
    assert box_iou(confirmed, box) > 0.6  # measured 0.73


def test_fallback_leaves_hog_detections_unchanged(hog_only, with_fallback):
    """Where HOG finds the face the CNN never runs: the same box as HOG alone (the CNN's box here is
    (115, 148, 313, 345))."""
    image, _, _ = aflw2000_image("image00050")
    np.testing.assert_array_equal(with_fallback.detect(image), hog_only.detect(image))
    np.testing.assert_array_equal(hog_only.detect(image), [[117, 142, 341, 366]])


def test_fallback_check_of_a_face_leaving_the_frame_is_none():
    """A large tracked face (400 px) whose box has left the frame but for a 9 px strip: the check's region,
    scaled to a 100 px face, is 2 px wide, where dlib's CNN aborts the whole process (heap corruption).
    Run in a child process so that such an abort fails this test instead of ending the session."""
    image_path = asset("aflw2000_sample/image00050.jpg")
    code = (
        "import cv2, numpy as np\n"
        "from pipelines.landmarks import DlibLandmarker\n"
        f"image = cv2.cvtColor(cv2.imread({str(image_path)!r}), cv2.COLOR_BGR2RGB)\n"
        "box = np.array([-551, 25, -151, 425], np.float32)\n"
        "print(DlibLandmarker(cnn_fallback=True).detect_near(image, box))\n"
    )
    root = Path(__file__).resolve().parents[1]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=environment, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout.strip()) == (0, "None"), result.stderr[-500:]
