"""Crop transforms: the matrix, the warp and the landmark mapping agree (pixel centres at +0.5)."""

import numpy as np
import pytest

from pipelines.align import (
    alignment_frame,
    apply_matrix,
    crop_matrices,
    scale_input,
    smooth_frames,
    source_coverage,
    warp,
)


def blob_centre(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre in the +0.5 pixel-centre convention."""
    rows, cols = np.indices(image.shape[:2])
    weight = image.astype(np.float64)
    return np.array([(weight * (cols + 0.5)).sum(), (weight * (rows + 0.5)).sum()]) / weight.sum()


def gaussian_blob(shape, centre, sigma=3.0) -> np.ndarray:
    rows, cols = np.indices(shape)
    squared = (cols + 0.5 - centre[0]) ** 2 + (rows + 0.5 - centre[1]) ** 2
    return (255 * np.exp(-squared / (2 * sigma**2))).astype(np.float32)


def test_crop_matrix_maps_centre_and_axis():
    frame = np.array([[300.0, 200.0, 50.0, 20.0]])
    matrix = crop_matrices(frame, 224)[0]
    assert apply_matrix(matrix, np.array([[300.0, 200.0]])) == pytest.approx(np.array([[112.0, 112.0]]), abs=1e-4)
    end_of_axis = apply_matrix(matrix, np.array([[350.0, 220.0]]))
    assert end_of_axis == pytest.approx(np.array([[224.0, 112.0]]), abs=1e-4)


@pytest.mark.parametrize("point", [(260.3, 181.7), (331.0, 222.5)])
def test_warp_moves_pixels_where_the_matrix_moves_points(point):
    image = gaussian_blob((400, 500), point)
    matrix = crop_matrices(np.array([[300.0, 200.0, 60.0, -15.0]]), 224)[0]
    crop = warp(image, matrix, 224)
    assert blob_centre(crop) == pytest.approx(apply_matrix(matrix, np.array([point]))[0], abs=0.05)


def test_scale_input_composes_with_a_resize():
    matrix = crop_matrices(np.array([[100.0, 80.0, 40.0, 5.0]]), 224)[0]
    source_points = np.array([[250.0, 190.0], [10.0, 30.0]])
    sx, sy = 0.5, 0.4
    working_points = source_points * [sx, sy]
    assert apply_matrix(scale_input(matrix, sx, sy), source_points) == pytest.approx(
        apply_matrix(matrix, working_points), abs=1e-4
    )


def test_alignment_frame_is_rotation_equivariant():
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(100, 200, size=(1, 68, 2))
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    frame = alignment_frame(landmarks)[0]
    rotated = alignment_frame(landmarks @ rotation.T)[0]
    assert rotated[:2] == pytest.approx(rotation @ frame[:2], abs=1e-6)
    assert rotated[2:] == pytest.approx(rotation @ frame[2:], abs=1e-6)


def test_smoothing_keeps_constant_tracks_and_reduces_jitter():
    constant = np.tile([[10.0, 20.0, 30.0, 1.0]], (30, 1))
    assert smooth_frames(constant, 2.0) == pytest.approx(constant)
    jitter = constant + np.random.default_rng(1).normal(0, 1, constant.shape)
    assert np.std(smooth_frames(jitter, 2.0) - constant) < 0.5 * np.std(jitter - constant)


@pytest.mark.parametrize(
    "frame",
    [
        (250.0, 200.0, 80.0, 10.0),  # well inside: the fast path
        (112.0, 200.0, 110.0, 0.0),  # the corners 2 px from the left edge: the fast path
        (111.0, 200.0, 110.0, 0.0),  # 1 px from it: warped, and still all inside
        (250.0, 200.0, 110.0, 110.0),  # rotated 45 degrees, its corners out at top and bottom
        (30.0, 380.0, 60.0, -20.0),  # over a corner of the frame
    ],
)
def test_source_coverage_is_the_warped_frame_of_ones(frame):
    """Crop pixels whose every interpolation tap is inside the source: the warp of an all-255 frame,
    computed or (when the crop's corners lie a pixel inside the frame) known to be everything."""
    matrix = crop_matrices(np.array([frame]), 224)[0]
    expected = warp(np.full((400, 500), 255, np.uint8), matrix, 224) == 255
    assert np.array_equal(source_coverage((400, 500), matrix, 224), expected)
