"""Parquet clip rows -> training samples and batches (jobs/data.py), against the decoded rows themselves."""

import itertools

import numpy as np
import pytest

from jobs.data import (DataError, cut_to_candidates, draw_clip_frames, draw_video_frames, mixed_batches, parse_source,
                       to_batch, training_corpus)
from pipelines.schema import decode_clip_row


def _numpy_rows(rows: list[dict]) -> dict:
    """The column batch Ray Data hands to the map (numpy, batch_format="numpy")."""
    return {name: np.array([row[name] for row in rows] + [None], dtype=object)[:-1] for name in rows[0]}


def _frame_index(decoded: dict, image: np.ndarray) -> int:
    """Which frame of the decoded clip an (unresized) sample image is."""
    matches = [i for i, frame in enumerate(decoded["frames"]) if np.array_equal(frame, image)]
    assert len(matches) == 1
    return matches[0]


def test_clip_samples_hold_distinct_frames_of_their_clip_with_matching_landmarks_and_masks(sample_clips):
    _, rows = sample_clips
    samples = draw_clip_frames(_numpy_rows(rows[:3]), frames=4, size=224, seed=0)
    assert list(samples["sample_key"]) == [row["segment_key"] for row in rows[:3]]
    for k, row in enumerate(rows[:3]):
        decoded = decode_clip_row(row)
        chosen = [_frame_index(decoded, image) for image in samples["images"][k]]
        assert len(set(chosen)) == 4
        assert np.array_equal(samples["landmarks"][k], decoded["landmarks"][chosen])
        assert np.array_equal(samples["masks"][k], decoded["masks"][chosen])


def test_samples_are_resized_with_landmarks_scaled_and_drawn_anew(sample_clips):
    _, rows = sample_clips
    row = rows[0]
    full = draw_clip_frames(_numpy_rows([row]), frames=4, size=224, seed=1)
    small = draw_clip_frames(_numpy_rows([row]), frames=4, size=64, seed=1)
    assert small["images"].shape == (1, 4, 64, 64, 3) and set(np.unique(small["masks"])) <= {0, 1}
    np.testing.assert_allclose(small["landmarks"], full["landmarks"] * 64 / 224, rtol=1e-6)
    # Same frames at both sizes: the small image is the big one, area-averaged.
    assert abs(small["images"][0, 0].mean() - full["images"][0, 0].mean()) < 2
    draws = {tuple(np.sort([_frame_index(decode_clip_row(row), image) for image in
                            draw_clip_frames(_numpy_rows([row]), frames=4, size=224)["images"][0]]))
             for _ in range(6)}
    assert len(draws) > 1  # fresh frames every epoch


def test_short_and_held_apart_clips_give_no_sample(sample_clips):
    _, rows = sample_clips
    batch = _numpy_rows(rows[:3])
    samples = draw_clip_frames(batch, frames=rows[0]["num_frames"] + 1, size=64)
    assert len(samples["sample_key"]) == 0 and samples["images"].shape == (0, rows[0]["num_frames"] + 1, 64, 64, 3)
    kept = draw_clip_frames(batch, frames=2, size=64, exclude=frozenset([rows[1]["segment_key"]]))
    assert list(kept["sample_key"]) == [rows[0]["segment_key"], rows[2]["segment_key"]]


def _split_into_segments(row: dict, cut: int) -> list[dict]:
    """Two segments of one source video from one clip row (frames [0, cut) and [cut, T))."""
    parts = []
    for index, (start, stop) in enumerate([(0, cut), (cut, row["num_frames"])]):
        part = dict(row, segment_key=f"{row['segment_key']}/{index}", num_frames=stop - start,
                    frames_jpeg=row["frames_jpeg"][start:stop], masks_png=row["masks_png"][start:stop],
                    landmarks=row["landmarks"][start * 136:stop * 136], frame_indices=row["frame_indices"][start:stop],
                    crop_transforms=row["crop_transforms"][start * 6:stop * 6])
        parts.append(part)
    return parts


def test_video_scope_draws_across_the_segments_of_a_video(sample_clips):
    _, rows = sample_clips
    decoded = decode_clip_row(rows[0])
    segments = _split_into_segments(rows[0], cut=3)  # 3 and 13 frames
    first_segment_frames = 0
    for seed in range(40):
        candidates = cut_to_candidates(_numpy_rows(segments), frames=4, seed=seed)
        assert list(candidates["video_key"]) == [f"{rows[0]['speaker_id']}/{rows[0]['video_id']}"] * 2
        sample = draw_video_frames(candidates, frames=4, size=224, seed=seed)
        chosen = [_frame_index(decoded, image) for image in sample["images"][0]]
        assert len(set(chosen)) == 4
        assert np.array_equal(sample["landmarks"][0], decoded["landmarks"][chosen])
        first_segment_frames += sum(c < 3 for c in chosen)
    # Uniform over the video's 16 frames: 3/16 of 160 draws = 30 from the first segment (sd ~4.6).
    assert 15 < first_segment_frames < 45


def test_batches_flatten_whole_clips_with_one_id_per_clip(sample_clips):
    _, rows = sample_clips
    samples = draw_clip_frames(_numpy_rows(rows[:3]), frames=2, size=64, seed=0)
    batch = to_batch(samples)
    assert batch.images.shape == (6, 3, 64, 64) and batch.clip_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.allclose(batch.images[3].permute(1, 2, 0).numpy() * 255, samples["images"][1, 1])
    assert np.array_equal(batch.landmarks[5].numpy(), samples["landmarks"][2, 1])


def test_a_directory_without_clips_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="holds no clips/ directory"):
        training_corpus(str(tmp_path))
    (tmp_path / "clips").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        training_corpus(str(tmp_path))


def test_several_draws_per_clip_are_independent_samples_of_it(sample_clips):
    _, rows = sample_clips
    samples = draw_clip_frames(_numpy_rows(rows[:2]), frames=4, size=224, seed=3, draws=5)
    assert list(samples["sample_key"]) == [rows[0]["segment_key"]] * 5 + [rows[1]["segment_key"]] * 5
    decoded = decode_clip_row(rows[0])
    draws = {tuple(_frame_index(decoded, image) for image in sample) for sample in samples["images"][:5]}
    assert len(draws) > 1


@pytest.mark.parametrize("text, expected", [
    ("data/clips", ("data/clips", 1.0)),
    ("data/synthetic:0.25", ("data/synthetic", 0.25)),
    ("s3://bucket/clips", ("s3://bucket/clips", 1.0)),
    ("s3://bucket/clips:3", ("s3://bucket/clips", 3.0)),
])
def test_a_source_is_a_path_with_an_optional_weight(text, expected):
    assert parse_source(text) == expected


@pytest.mark.parametrize("text, message", [("data/clips:half", "not a number"), ("data/clips:0", "positive"),
                                           ("data/clips:-1", "positive")])
def test_a_bad_weight_is_one_clear_error(text, message):
    with pytest.raises(DataError, match=message):
        parse_source(text)


def _source(name: str, samples: int, per_batch: int):
    """A source whose passes yield `samples` samples named name/i in batches of `per_batch`."""
    def one_pass():
        keys = np.array([f"{name}/{i}" for i in range(samples)], dtype=object)
        return ({"sample_key": keys[i:i + per_batch], "index": np.arange(samples)[i:i + per_batch]}
                for i in range(0, samples, per_batch))
    return one_pass


def test_mixed_batches_draw_each_clip_from_a_source_by_weight():
    """A 3-sample source and a 1,000-sample one mixed 1:3: a quarter of the clips come from the small one,
    which starts a new pass whenever it runs out, and every batch holds `clips` samples."""
    batches = mixed_batches([_source("small", 3, 2), _source("large", 1000, 8)], [1, 3], clips=8,
                            rng=np.random.default_rng(0))
    drawn = [next(batches) for _ in range(400)]
    assert all(len(batch["sample_key"]) == 8 == len(batch["index"]) for batch in drawn)
    keys = [key for batch in drawn for key in batch["sample_key"]]
    small = [key for key in keys if key.startswith("small/")]
    assert abs(len(small) / len(keys) - 0.25) < 0.02
    # Passes follow each other in order: the small source cycles 0, 1, 2, 0, 1, 2, ...
    assert small[:9] == [f"small/{i % 3}" for i in range(9)]
    large = [int(key.split("/")[1]) for key in keys if key.startswith("large/")]
    assert large[:1000] == list(range(1000))


def test_a_source_without_samples_ends_the_batches_not_a_hang():
    """The training loop takes the end as a pass without a batch: the data-error verdict (tests/test_train_job.py)."""
    batches = mixed_batches([_source("empty", 0, 4), _source("full", 10, 4)], [1, 1], clips=4,
                            rng=np.random.default_rng(0))
    assert list(itertools.islice(batches, 10)) == []


def test_the_next_pass_opens_while_the_current_one_is_read():
    """A pass whose start takes 0.3 s (a Ray Data execution's start-up) is opened in the background: reading
    five passes of it back to back waits for the first start only, and every pass gives all its batches in order."""
    import threading
    import time

    from jobs.data import OverlappedPasses

    started = []

    def slow_pass():
        started.append(threading.current_thread().name)
        time.sleep(0.3)
        yield from ({"index": np.array([i])} for i in range(3))

    next_pass = OverlappedPasses(slow_pass)
    begin = time.perf_counter()
    passes = []
    for _ in range(5):
        passes.append([int(batch["index"][0]) for batch in next_pass()])
        time.sleep(0.35)  # the training steps of a pass
    waited = time.perf_counter() - begin - 5 * 0.35
    assert passes == [[0, 1, 2]] * 5
    assert waited < 0.3 + 0.15, waited  # measured about 0.3: only the first start is waited for
    assert all(name.startswith("next-pass") for name in started)
    next_pass.close()
    assert list(OverlappedPasses(lambda: iter(()))()) == []  # an empty pass stays empty
