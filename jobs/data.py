"""Parquet clip rows of `make preprocess` -> training batches of whole clips, with Ray Data.

One ingest path for a local run and a cluster run:
  read_parquet(clips/*.parquet, files shuffled every epoch) -> select_columns
  -> map_batches(draw_clip_frames)   CPU tasks: F random distinct frames per clip, anew every epoch,
                                     JPEG/PNG decoded, resized to the model size, landmarks scaled
  -> iter_batches(clips_per_worker, local shuffle buffer, drop_last) in each training worker
  -> to_batch: (clips, F, ...) -> cest.step.Batch of clips * F frames, clip ids = position in the batch.
A sample (a dataset row after the map) is one clip: its F frames travel together, so every batch holds
whole clips with distinct clip ids and the pairing never sees a frame alone. Clips with fewer than F frames
are skipped (and counted in the map's output as no row).

Consistency scope "video" (Fig. 11): a sample is one source video (speaker_id/video_id), its F frames drawn
uniformly from the union of all its segments. Bringing a video's segments together needs a hash partition
by video; it runs on reduced rows (each segment first cut to at most F JPEG candidates), so only
O(segments x F) compressed frames move through the object store, never the whole clips.

Sample columns: images (F, S, S, 3) uint8, masks (F, S, S) uint8, landmarks (F, 68, 2) float32 in pixels of
the S-sized image, sample_key (segment key, or speaker_id/video_id in video scope).

Several sources (`--data synthetic:0.5 --data clips:0.5`, `parse_source`): one dataset each, and
`mixed_batches` fills every batch clip by clip, each clip from source k with probability weight k (a
multinomial draw per batch), every source making its own passes; so a small real corpus and a large
synthetic set mix at the stated rate however different their sizes.
"""

import itertools
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pyarrow.fs
import pyarrow.parquet as pq
import torch

from cest.step import Batch
from pipelines.inputs import resolve
from pipelines.schema import CLIP_SCHEMA, SchemaError

FRAME_COLUMNS = ["frames_jpeg", "masks_png", "landmarks", "crop_size", "num_frames"]
KEY_COLUMNS = ["segment_key", "speaker_id", "video_id"]
# Ray Data 2.60 bin-packs Parquet files into read units of up to 128 MiB: a small corpus becomes one block
# and one decoding task. 16 MiB (about a dozen 100-frame segments) keeps several tasks busy on small data
# and is still large enough to amortise a task at VoxCeleb scale.
PARQUET_BIN_BYTES = 16 * 1024 * 1024
# Every pass over the data starts a new Ray Data execution (seconds of start-up: listing, footer readers, the
# first decodes). In a small corpus each clip row therefore gives several samples per pass (each with its own
# random frames), enough for SAMPLES_PER_EXECUTION samples; a corpus of more than SMALL_CORPUS_FILES files
# gives one sample per clip (its passes are long anyway).
SAMPLES_PER_EXECUTION = 512
SMALL_CORPUS_FILES = 64
MAX_DRAWS_PER_CLIP = 16


class DataError(ValueError):
    """The data location is unusable (reported as one line before any worker starts)."""


def clip_files(data: str) -> tuple[pyarrow.fs.FileSystem, list[str]]:
    """(filesystem, clip part files in it) of a preprocess output (local path or URI), schema checked."""
    fs, root = resolve(data)
    directory = posixpath.join(root, "clips")
    if fs.get_file_info(directory).type != pyarrow.fs.FileType.Directory:
        raise DataError(f"{data} holds no clips/ directory (the output of `make preprocess`)")
    files = sorted(info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(directory))
                   if info.base_name.endswith(".parquet") and not info.base_name.startswith("."))
    if not files:
        raise DataError(f"{data}/clips holds no .parquet files")
    schema = pq.read_schema(files[0], filesystem=fs)
    for name in KEY_COLUMNS + FRAME_COLUMNS:
        if name not in schema.names:
            raise DataError(f"{files[0]}: not a clip file, column {name} is missing")
        if schema.field(name).type != CLIP_SCHEMA.field(name).type:
            raise DataError(f"{files[0]}: column {name} is {schema.field(name).type}, "
                            f"expected {CLIP_SCHEMA.field(name).type}")
    return fs, files


def _decode(data: bytes, flags: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise SchemaError("a frame or mask does not decode")
    return image


def decode_frames(jpegs, pngs, landmarks: np.ndarray, crop_size: int, size: int) -> dict:
    """Chosen frames of one clip at `size`: images (F, size, size, 3), masks (F, size, size), landmarks (F, 68, 2).

    Landmark pixel coordinates are measured from the image corner (pixel centres at +0.5), so they scale
    with the image."""
    interpolation = cv2.INTER_AREA if size < crop_size else cv2.INTER_LINEAR
    images, masks = [], []
    for jpeg, png in zip(jpegs, pngs):
        image = _decode(jpeg, cv2.IMREAD_COLOR_RGB)
        mask = _decode(png, cv2.IMREAD_GRAYSCALE)
        if size != crop_size:
            image = cv2.resize(image, (size, size), interpolation=interpolation)
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        images.append(image)
        masks.append((mask > 127).astype(np.uint8))
    return {"images": np.stack(images), "masks": np.stack(masks),
            "landmarks": (np.asarray(landmarks, np.float32) * (size / crop_size)).astype(np.float32)}


def _stack_samples(samples: list[dict], frames: int, size: int) -> dict:
    if not samples:
        return {"images": np.zeros((0, frames, size, size, 3), np.uint8),
                "masks": np.zeros((0, frames, size, size), np.uint8),
                "landmarks": np.zeros((0, frames, 68, 2), np.float32),
                "sample_key": np.zeros(0, dtype=object)}
    return {name: np.stack([s[name] for s in samples]) if name != "sample_key"
            else np.array([s[name] for s in samples], dtype=object) for name in samples[0]}


def draw_clip_frames(rows: dict, frames: int, size: int, exclude: frozenset = frozenset(), seed=None,
                     draws: int = 1) -> dict:
    """Ray Data map: clip rows (numpy batch of FRAME_COLUMNS + segment_key) -> `draws` samples per usable clip.

    Each sample holds F distinct frames of the clip drawn uniformly at random (fresh each call unless `seed`);
    clips with fewer than F frames, or whose segment_key is in `exclude` (held apart), give no sample."""
    rng = np.random.default_rng(seed)
    samples = []
    for i, key in enumerate(rows["segment_key"]):
        count = int(rows["num_frames"][i])
        if count < frames or key in exclude:
            continue
        for _ in range(draws):
            samples.append(_draw_one(rows, i, key, count, frames, size, rng))
    return _stack_samples(samples, frames, size)


def _draw_one(rows: dict, i: int, key: str, count: int, frames: int, size: int, rng) -> dict:
    chosen = np.sort(rng.choice(count, frames, replace=False))
    landmarks = np.asarray(rows["landmarks"][i], np.float32).reshape(count, 68, 2)[chosen]
    sample = decode_frames([rows["frames_jpeg"][i][c] for c in chosen], [rows["masks_png"][i][c] for c in chosen],
                           landmarks, int(rows["crop_size"][i]), size)
    return sample | {"sample_key": key}


def cut_to_candidates(rows: dict, frames: int, exclude: frozenset = frozenset(), seed=None) -> dict:
    """Ray Data map (video scope): each segment -> at most F of its frames at random, still compressed,
    with its frame count, so that the video's frames can be drawn uniformly after grouping."""
    rng = np.random.default_rng(seed)
    out = {name: [] for name in ("video_key", "num_frames", "crop_size", "frames_jpeg", "masks_png", "landmarks")}
    for i, key in enumerate(rows["segment_key"]):
        if key in exclude:
            continue
        count = int(rows["num_frames"][i])
        chosen = rng.permutation(count)[:frames]
        out["video_key"].append(f"{rows['speaker_id'][i]}/{rows['video_id'][i]}")
        out["num_frames"].append(count)
        out["crop_size"].append(int(rows["crop_size"][i]))
        out["frames_jpeg"].append([rows["frames_jpeg"][i][c] for c in chosen])
        out["masks_png"].append([rows["masks_png"][i][c] for c in chosen])
        out["landmarks"].append(np.asarray(rows["landmarks"][i], np.float32).reshape(count, 68, 2)[chosen].ravel())
    return {name: np.array(values, dtype=object) if name not in ("num_frames", "crop_size") else np.array(values)
            for name, values in out.items()}


def draw_video_frames(group: dict, frames: int, size: int, seed=None) -> dict:
    """Ray Data map_groups (video scope): the candidates of one video's segments -> one sample of F frames
    uniform over the union of the video's frames (hypergeometric counts per segment; each segment's random
    candidates make any k of them a uniform k-subset). Videos with fewer than F frames give no sample."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(group["num_frames"], int)
    if counts.sum() < frames:
        return _stack_samples([], frames, size)
    per_segment = np.bincount(np.repeat(np.arange(len(counts)), counts)[rng.choice(counts.sum(), frames, replace=False)],
                              minlength=len(counts))
    jpegs, pngs, landmarks = [], [], []
    for s, take in enumerate(per_segment):
        jpegs += list(group["frames_jpeg"][s][:take])
        pngs += list(group["masks_png"][s][:take])
        landmarks.append(np.asarray(group["landmarks"][s], np.float32).reshape(-1, 68, 2)[:take])
    sample = decode_frames(jpegs, pngs, np.concatenate(landmarks), int(group["crop_size"][0]), size)
    return _stack_samples([sample | {"sample_key": group["video_key"][0]}], frames, size)


def draws_per_clip(fs, files: list[str], minimum_samples: int = SAMPLES_PER_EXECUTION) -> int:
    """Samples each clip row gives per pass (row counts from the Parquet footers of a small corpus)."""
    if len(files) > SMALL_CORPUS_FILES or minimum_samples <= 0:
        return 1
    rows = sum(pq.read_metadata(file, filesystem=fs).num_rows for file in files)
    return min(MAX_DRAWS_PER_CLIP, max(1, -(-minimum_samples // max(rows, 1))))


def training_dataset(data: str, frames: int, size: int, scope: str = "clip", exclude=(), seed: int | None = None,
                     minimum_samples: int = SAMPLES_PER_EXECUTION):
    """The Ray Dataset of training samples (see the module doc). Lazy: nothing runs until iterated.

    In a small corpus each clip gives `draws_per_clip` samples per pass (clip scope), each with its own frames;
    the workers' local shuffle buffers spread them over batches."""
    import ray.data
    from ray.data import FileShuffleConfig

    fs, files = clip_files(data)
    exclude = frozenset(exclude)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the job prints its own progress lines
    os.environ.setdefault("RAY_DATA_PARQUET_BIN_PACKING_BYTES", str(PARQUET_BIN_BYTES))
    shuffle = FileShuffleConfig(seed=seed, reseed_after_execution=True) if seed is not None else "files"
    rows = ray.data.read_parquet(files, filesystem=fs, shuffle=shuffle).select_columns(KEY_COLUMNS + FRAME_COLUMNS)
    if scope == "clip":
        return rows.map_batches(draw_clip_frames, batch_size=8, batch_format="numpy",
                                fn_kwargs={"frames": frames, "size": size, "exclude": exclude,
                                           "draws": draws_per_clip(fs, files, minimum_samples)})
    if scope == "video":
        candidates = rows.map_batches(cut_to_candidates, batch_size=8, batch_format="numpy",
                                      fn_kwargs={"frames": frames, "exclude": exclude})
        return candidates.groupby("video_key").map_groups(draw_video_frames, batch_format="numpy",
                                                          fn_kwargs={"frames": frames, "size": size})
    raise ValueError(f"unknown consistency scope {scope!r}")


def parse_source(text: str) -> tuple[str, float]:
    """"PATH" or "PATH:WEIGHT" (a URI's own colon is kept: s3://bucket/clips:0.3) -> (path, weight > 0)."""
    path, sep, weight = text.rpartition(":")
    if sep and path and not weight.startswith("//"):
        try:
            value = float(weight)
        except ValueError:
            raise DataError(f"--data {text}: the weight after the last ':' is not a number") from None
        if not value > 0 or value == float("inf"):
            raise DataError(f"--data {text}: the weight must be a positive number")
        return path, value
    return text, 1.0


def mixed_batches(passes: list, weights: list[float], clips: int, rng: np.random.Generator):
    """Endless batches of `clips` samples (numpy, as iter_batches yields) mixed from several sources.

    passes[k]() starts a new pass over source k (an iterator of sample batches); each batch takes a
    multinomial(clips, weights) count from the sources, in source order, and a source that runs out starts its
    next pass. A source whose pass gives nothing is an error (it would never fill its share)."""
    iterators = [iter(start()) for start in passes]
    pending: list[dict | None] = [None] * len(passes)
    probabilities = np.asarray(weights, float) / sum(weights)

    def take(k: int, count: int) -> dict:
        while pending[k] is None or len(pending[k]["sample_key"]) < count:
            try:
                batch = next(iterators[k])
            except StopIteration:
                iterators[k] = iter(passes[k]())
                batch = next(iterators[k], None)
                if batch is None:
                    raise RuntimeError(f"data source {k + 1} gave no sample in a whole pass") from None
            pending[k] = batch if pending[k] is None else {
                name: np.concatenate([pending[k][name], batch[name]]) for name in batch}
        taken = {name: values[:count] for name, values in pending[k].items()}
        pending[k] = {name: values[count:] for name, values in pending[k].items()}
        return taken

    try:
        while True:
            parts = [take(k, int(count)) for k, count in enumerate(rng.multinomial(clips, probabilities)) if count]
            yield {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    finally:  # closed with this generator, while Ray is up: a Ray Data pass torn down after Ray hangs the exit
        for iterator in iterators:
            getattr(iterator, "close", lambda: None)()


class OverlappedPasses:
    """Called, starts a pass over a source like `start_pass()` does (an iterator of batches), but the pass was
    opened, up to its first batch, in a background thread while the one before was read: a Ray Data
    execution takes seconds to start (listing, footers, first decodes), which a small corpus or the cheap
    landmark warm-up steps would otherwise wait for at every pass. `close()` stops the pass opened ahead."""

    def __init__(self, start_pass):
        self._start_pass = start_pass
        self._opener = ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-pass")
        self._upcoming = self._opener.submit(self._open)

    def _open(self):
        iterator = iter(self._start_pass())
        return next(iterator, None), iterator

    def __call__(self):
        first, iterator = self._upcoming.result()
        self._upcoming = self._opener.submit(self._open)
        return iter(()) if first is None else itertools.chain([first], iterator)

    def close(self) -> None:
        if self._upcoming.exception() is None:  # a pass that failed to open is no one's to read now
            _, iterator = self._upcoming.result()
            getattr(iterator, "close", lambda: None)()  # a generator's close ends its Ray Data execution
        self._opener.shutdown()


def to_batch(samples: dict, device: torch.device | str = "cpu") -> Batch:
    """A batch of C samples (numpy, as iter_batches yields: images (C, F, S, S, 3) ...) -> Batch of C * F
    frames; the clip id of a frame is its sample's position in the batch."""
    clips, frames = samples["images"].shape[:2]

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(samples[name])).to(device).flatten(0, 1)

    images = tensor("images").permute(0, 3, 1, 2).float().div(255).contiguous()
    masks = tensor("masks")[:, None].float()
    clip_ids = torch.arange(clips, device=device).repeat_interleave(frames)
    return Batch(images, masks, tensor("landmarks").float(), clip_ids)


def read_frames(data: str, keys: list[str], size: int) -> dict:
    """The middle frame of each named segment, decoded at `size` (for held-apart image grids):
    images (K, size, size, 3), masks (K, size, size), landmarks (K, 68, 2), in the order of `keys`."""
    fs, files = clip_files(data)
    found = {}
    for file in files:
        table = pq.read_table(file, filesystem=fs, columns=["segment_key"] + FRAME_COLUMNS,
                              filters=[("segment_key", "in", keys)])
        for row in table.to_pylist():
            middle = row["num_frames"] // 2
            landmarks = np.asarray(row["landmarks"], np.float32).reshape(-1, 68, 2)[middle:middle + 1]
            found[row["segment_key"]] = decode_frames([row["frames_jpeg"][middle]], [row["masks_png"][middle]],
                                                      landmarks, row["crop_size"], size)
        if len(found) == len(keys):
            break
    return {name: np.concatenate([found[k][name] for k in keys]) for name in ("images", "masks", "landmarks")}


def holdout_keys(data: str, count: int) -> list[str]:
    """`count` segment keys held apart from training: the first in key order of the first clip files
    (deterministic; only the key column of as many files as needed is read)."""
    fs, files = clip_files(data)
    keys = []
    for file in files:
        if len(keys) >= count:
            break
        keys += sorted(pq.read_table(file, filesystem=fs, columns=["segment_key"]).column(0).to_pylist())
    return keys[:count]
