"""Parquet clip rows of `make preprocess` -> training batches of whole clips, with Ray Data.

One ingest path for a local run and a cluster run:
  clip_rows(clips/*.parquet row group by row group, files shuffled every epoch, the columns needed)
  -> map_batches(draw_clip_frames)   CPU tasks: F random distinct frames per clip, anew every epoch,
                                     JPEG/PNG decoded, resized to the model size, landmarks scaled
  -> iter_batches(clips_per_worker, local shuffle buffer, drop_last) in each training worker
  -> to_batch: (clips, F, ...) -> cest.step.Batch of clips * F frames, clip ids = position in the batch.
A sample (a dataset row after the map) is one clip: its F frames travel together, so every batch holds
whole clips with distinct clip ids and the pairing never sees a frame alone.

Bad data (jobs/data_errors.py, the policy): the files are checked by their footers before any worker starts
(`training_corpus`) and only readable ones are read; a row that cannot give a sample (frame counts that do not
match, non-finite landmarks, fewer than F frames, a frame or mask that does not decode) gives none, and the map
reports it (file from the read's path column, segment key, reason) to the job's SkipList, held by a Ray actor
(`start_skip_registry`) that names each skip once, keeps skipped.jsonl and says when the job must stop.

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
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from cest.step import Batch
from jobs.data_errors import (Corpus, DataError, Skip, SkipList, read_clip_file,  # noqa: F401 (DataError)
                              readable_rows, row_groups, row_problem, survey)
from pipelines.inputs import resolve
from pipelines.schema import SchemaError, decode_image

FRAME_COLUMNS = ["frames_jpeg", "masks_png", "landmarks", "crop_size", "num_frames"]
KEY_COLUMNS = ["segment_key", "speaker_id", "video_id"]
# Every pass over the data starts a new Ray Data execution (seconds of start-up: listing, footer readers, the
# first decodes). In a small corpus each clip row therefore gives several samples per pass (each with its own
# random frames), enough for SAMPLES_PER_EXECUTION samples; a corpus of more than SMALL_CORPUS_FILES files
# gives one sample per clip (its passes are long anyway).
SAMPLES_PER_EXECUTION = 512
SMALL_CORPUS_FILES = 64
MAX_DRAWS_PER_CLIP = 16
SKIP_NAMESPACE = "cest"  # the Ray namespace of the jobs' SkipList actors


def training_corpus(data: str) -> Corpus:
    """The clip files of a training source (local path or URI), checked by their footers in parallel."""
    return survey(data, KEY_COLUMNS + FRAME_COLUMNS)


def decode_frames(jpegs, pngs, landmarks: np.ndarray, crop_size: int, size: int) -> dict:
    """Chosen frames of one clip at `size`: images (F, size, size, 3), masks (F, size, size), landmarks (F, 68, 2).

    Landmark pixel coordinates are measured from the image corner (pixel centres at +0.5), so they scale
    with the image."""
    interpolation = cv2.INTER_AREA if size < crop_size else cv2.INTER_LINEAR
    images, masks = [], []
    for jpeg, png in zip(jpegs, pngs):
        image = decode_image(jpeg, cv2.IMREAD_COLOR_RGB)
        mask = decode_image(png, cv2.IMREAD_GRAYSCALE)
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


def _row(rows: dict, i: int) -> dict:
    """Row i of a numpy column batch, as a mapping of column names to values."""
    return {name: values[i] for name, values in rows.items()}


def _report(report, skips: list[Skip]) -> None:
    if skips and report is not None:
        report(skips)


def draw_clip_frames(rows: dict, frames: int, size: int, exclude: frozenset = frozenset(), seed=None,
                     draws: int = 1, report=None) -> dict:
    """Ray Data map: clip rows (numpy batch of FRAME_COLUMNS + segment_key [+ path]) -> `draws` samples per
    usable clip.

    Each sample holds F distinct frames of the clip drawn uniformly at random (fresh each call unless `seed`);
    clips whose segment_key is in `exclude` (held apart) give no sample, nor do rows that cannot give one
    (jobs.data_errors.row_problem, or a chosen frame that does not decode): those go to `report(skips)`."""
    rng = np.random.default_rng(seed)
    samples, skips = [], []
    for i, key in enumerate(rows["segment_key"]):
        if key in exclude:
            continue
        row = _row(rows, i)
        problem = row_problem(row, frames)
        if problem is None:
            try:
                drawn = [_draw_one(row, frames, size, rng) for _ in range(draws)]
            except SchemaError as error:
                problem = str(error)
        if problem is None:
            samples += drawn
        else:
            skips.append(Skip(str(row.get("path", "")), key, problem))
    _report(report, skips)
    return _stack_samples(samples, frames, size)


def _draw_one(row: dict, frames: int, size: int, rng) -> dict:
    count = int(row["num_frames"])
    chosen = np.sort(rng.choice(count, frames, replace=False))
    landmarks = np.asarray(row["landmarks"], np.float32).reshape(count, 68, 2)[chosen]
    sample = decode_frames([row["frames_jpeg"][c] for c in chosen], [row["masks_png"][c] for c in chosen],
                           landmarks, int(row["crop_size"]), size)
    return sample | {"sample_key": row["segment_key"]}


def cut_to_candidates(rows: dict, frames: int, exclude: frozenset = frozenset(), seed=None, report=None) -> dict:
    """Ray Data map (video scope): each segment -> at most F of its frames at random, still compressed,
    with its frame count, so that the video's frames can be drawn uniformly after grouping. Rows that
    cannot give frames (jobs.data_errors.row_problem) go to `report(skips)`."""
    rng = np.random.default_rng(seed)
    names = ("video_key", "file", "segment_key", "num_frames", "crop_size", "frames_jpeg", "masks_png", "landmarks")
    out = {name: [] for name in names}
    skips = []
    for i, key in enumerate(rows["segment_key"]):
        if key in exclude:
            continue
        row = _row(rows, i)
        problem = row_problem(row)
        if problem is not None:
            skips.append(Skip(str(row.get("path", "")), key, problem))
            continue
        count = int(row["num_frames"])
        chosen = rng.permutation(count)[:frames]
        out["video_key"].append(f"{row['speaker_id']}/{row['video_id']}")
        out["file"].append(str(row.get("path", "")))
        out["segment_key"].append(key)
        out["num_frames"].append(count)
        out["crop_size"].append(int(row["crop_size"]))
        out["frames_jpeg"].append([row["frames_jpeg"][c] for c in chosen])
        out["masks_png"].append([row["masks_png"][c] for c in chosen])
        out["landmarks"].append(np.asarray(row["landmarks"], np.float32).reshape(count, 68, 2)[chosen].ravel())
    _report(report, skips)
    return {name: np.array(values, dtype=object) if name not in ("num_frames", "crop_size") else np.array(values)
            for name, values in out.items()}


def draw_video_frames(group: dict, frames: int, size: int, seed=None, report=None) -> dict:
    """Ray Data map_groups (video scope): the candidates of one video's segments -> one sample of F frames
    uniform over the union of the video's frames (hypergeometric counts per segment; each segment's random
    candidates make any k of them a uniform k-subset). A video with fewer than F frames, or with a chosen
    frame that does not decode, gives no sample and goes to `report(skips)`."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(group["num_frames"], int)
    if counts.sum() < frames:
        _report(report, [Skip(group["file"][0], group["video_key"][0],
                              f"{counts.sum()} frames in the video, fewer than the {frames} a sample needs")])
        return _stack_samples([], frames, size)
    per_segment = np.bincount(np.repeat(np.arange(len(counts)), counts)[rng.choice(counts.sum(), frames, replace=False)],
                              minlength=len(counts))
    parts = []
    for s, take in enumerate(per_segment):
        if not take:
            continue
        landmarks = np.asarray(group["landmarks"][s], np.float32).reshape(-1, 68, 2)[:take]
        try:
            parts.append(decode_frames(list(group["frames_jpeg"][s][:take]), list(group["masks_png"][s][:take]),
                                       landmarks, int(group["crop_size"][s]), size))
        except SchemaError as error:
            _report(report, [Skip(group["file"][s], group["segment_key"][s], str(error))])
            return _stack_samples([], frames, size)
    sample = {name: np.concatenate([part[name] for part in parts]) for name in ("images", "masks", "landmarks")}
    return _stack_samples([sample | {"sample_key": group["video_key"][0]}], frames, size)


def draws_per_clip(corpus: Corpus, minimum_samples: int = SAMPLES_PER_EXECUTION) -> int:
    """Samples each clip row gives per pass (row counts from the Parquet footers of a small corpus)."""
    if len(corpus.files) > SMALL_CORPUS_FILES or minimum_samples <= 0:
        return 1
    rows = sum(corpus.rows.values())
    return min(MAX_DRAWS_PER_CLIP, max(1, -(-minimum_samples // max(rows, 1))))


def training_dataset(corpus: Corpus | str, frames: int, size: int, scope: str = "clip", exclude=(),
                     seed: int | None = None, minimum_samples: int = SAMPLES_PER_EXECUTION, report=None):
    """The Ray Dataset of training samples (see the module doc) of a corpus's readable files (or of a data
    location, surveyed here). Lazy: nothing runs until iterated. Rows that give no sample go to `report(skips)`
    (a SkipReporter in a job).

    In a small corpus each clip gives `draws_per_clip` samples per pass (clip scope), each with its own frames;
    the workers' local shuffle buffers spread them over batches."""
    import ray.data
    from ray.data import FileShuffleConfig

    from jobs import data_backoff

    corpus = corpus if isinstance(corpus, Corpus) else training_corpus(corpus)
    exclude = frozenset(exclude)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the job prints its own progress lines
    data_backoff.install()  # the scheduling loop must not spin beside the training step (jobs/data_backoff.py)
    shuffle = FileShuffleConfig(seed=seed, reseed_after_execution=True) if seed is not None else "files"
    rows = clip_rows(corpus, KEY_COLUMNS + FRAME_COLUMNS, shuffle, report)
    if scope == "clip":
        return rows.map_batches(draw_clip_frames, batch_size=8, batch_format="numpy",
                                fn_kwargs={"frames": frames, "size": size, "exclude": exclude,
                                           "draws": draws_per_clip(corpus, minimum_samples), "report": report})
    if scope == "video":
        candidates = rows.map_batches(cut_to_candidates, batch_size=8, batch_format="numpy",
                                      fn_kwargs={"frames": frames, "exclude": exclude, "report": report})
        return candidates.groupby("video_key").map_groups(draw_video_frames, batch_format="numpy",
                                                          fn_kwargs={"frames": frames, "size": size, "report": report})
    raise ValueError(f"unknown consistency scope {scope!r}")


def clip_rows(corpus: Corpus, columns: list[str], shuffle=None, report=None):
    """The Ray Dataset of the corpus's clip rows (`columns` and the file's "path"), read row group by row group
    (`ClipFiles`): a row group that does not read goes to `report(skips)` instead of failing the job."""
    import ray.data

    return ray.data.read_datasource(clip_files_datasource()(corpus, columns, shuffle, report))


def clip_files_datasource():
    """The ClipFiles datasource class (defined on first use: this module imports Ray only where it runs it)."""
    from ray.data.datasource import FileBasedDatasource

    class ClipFiles(FileBasedDatasource):
        """Clip Parquet files, one block per row group (Ray Data's own Parquet reader fails the whole
        execution on one corrupt page)."""

        def __init__(self, corpus: Corpus, columns: list[str], shuffle=None, report=None):
            super().__init__(corpus.files, filesystem=corpus.fs, shuffle=shuffle, include_paths=True)
            self._columns, self._report = columns, report

        def _open_input_source(self, filesystem, path: str, **open_args):
            return filesystem.open_input_file(path)  # Parquet needs random access, not a stream

        def _read_stream(self, f, path: str):
            for part in row_groups(pq.ParquetFile(f), path, self._columns):
                if isinstance(part, Skip):
                    _report(self._report, [part])
                else:
                    yield part

    return ClipFiles


class SkipRegistry:
    """The job's SkipList in a Ray actor (named, num_cpus 0), so that every map task and rank 0 reach it."""

    def __init__(self, skips: SkipList):
        self.skips = skips

    def add(self, skips: list[Skip]) -> int:
        return self.skips.add(skips)

    def status(self) -> tuple[int, bool]:
        return self.skips.status()

    def verdict(self) -> str | None:
        self.skips.flush()
        return self.skips.verdict()


def start_skip_registry(skips: SkipList):
    """Start the actor holding `skips` (its state from now on); returns (its name, for the tasks and workers, and
    its handle, which the caller keeps while the job runs: Ray ends an actor whose handles are all gone)."""
    import ray

    name = f"skips-{uuid.uuid4().hex[:12]}"
    return name, ray.remote(SkipRegistry).options(name=name, namespace=SKIP_NAMESPACE, num_cpus=0).remote(skips)


def skip_registry(name: str):
    import ray

    return ray.get_actor(name, namespace=SKIP_NAMESPACE)


class SkipReporter:
    """`report` of the map functions in a job: sends a task's skips to the job's SkipRegistry (picklable: it
    holds the actor's name). Waits for the actor, so that a pass's skips are all counted when its last
    sample arrives."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, skips: list[Skip]) -> None:
        import ray

        ray.get(skip_registry(self.name).add.remote(skips))


def skip_status(name: str | None) -> tuple[int, bool]:
    """(skipped samples so far, whether the job must stop) from the job's SkipRegistry."""
    if name is None:
        return 0, False
    import ray

    return ray.get(skip_registry(name).status.remote())


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
    next pass. A source whose whole pass gives nothing (every row bad or held apart) would never fill its share:
    the batches end there, and the training loop takes it as a pass without a batch (the data-error verdict)."""
    iterators = [iter(start()) for start in passes]
    pending: list[dict | None] = [None] * len(passes)
    probabilities = np.asarray(weights, float) / sum(weights)

    def take(k: int, count: int) -> dict | None:
        """`count` samples of source k, or None when a whole pass over it gave none."""
        while pending[k] is None or len(pending[k]["sample_key"]) < count:
            try:
                batch = next(iterators[k])
            except StopIteration:
                iterators[k] = iter(passes[k]())
                batch = next(iterators[k], None)
                if batch is None:
                    return None
            pending[k] = batch if pending[k] is None else {
                name: np.concatenate([pending[k][name], batch[name]]) for name in batch}
        taken = {name: values[:count] for name, values in pending[k].items()}
        pending[k] = {name: values[count:] for name, values in pending[k].items()}
        return taken

    try:
        while True:
            parts = [take(k, int(count)) for k, count in enumerate(rng.multinomial(clips, probabilities)) if count]
            if any(part is None for part in parts):
                return
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


def read_frames(data: str, holdout: list, size: int, report=None) -> dict | None:
    """The middle frame of each held-apart row ([file, segment key] pairs of `holdout_rows`), decoded at `size`
    (for image grids): images (K, size, size, 3), masks (K, size, size), landmarks (K, 68, 2), in their order;
    None when there are none. The rows were chosen among readable ones, but their files are read again here, row
    group by row group: one that no longer reads (a corrupt page, a network error) goes to `report(skips)` and its
    rows are left out."""
    fs, _ = resolve(data)
    keys_by_file = defaultdict(list)
    for file, key in holdout:
        keys_by_file[file].append(key)
    found = {}
    for file, keys in keys_by_file.items():
        for part in read_clip_file(fs, file, ["segment_key"] + FRAME_COLUMNS):
            if isinstance(part, Skip):
                _report(report, [part])
                continue
            for row in part.filter(pc.is_in(part.column("segment_key"), pa.array(keys))).to_pylist():
                found[row["segment_key"]] = _middle_frame(row, size)
    kept = [found[key] for _, key in holdout if key in found]
    if not kept:
        return None
    return {name: np.concatenate([frame[name] for frame in kept]) for name in ("images", "masks", "landmarks")}


def _middle_frame(row: dict, size: int) -> dict:
    middle = row["num_frames"] // 2
    landmarks = np.asarray(row["landmarks"], np.float32).reshape(-1, 68, 2)[middle:middle + 1]
    return decode_frames([row["frames_jpeg"][middle]], [row["masks_png"][middle]], landmarks, row["crop_size"], size)


def holdout_rows(corpus: Corpus, count: int, skips: SkipList) -> list[list[str]]:
    """`count` rows held apart from training for image grids, as [file, segment key]: the first readable rows in
    key order of the first readable clip files (deterministic). A row that cannot be read is skipped into
    `skips` (training would skip it too) and the next one is taken."""
    chosen = []
    for file in corpus.files:
        if len(chosen) >= count:
            break
        for row in sorted(readable_rows(corpus, file, skips, ["segment_key"] + FRAME_COLUMNS),
                          key=lambda row: row["segment_key"]):
            if len(chosen) >= count:
                break
            problem = row_problem(row)
            if problem is None:
                try:
                    _middle_frame(row, 32)
                except SchemaError as error:
                    problem = str(error)
            if problem is None:
                chosen.append([file, row["segment_key"]])
            else:
                skips.add([Skip(file, row["segment_key"], problem)])
    return chosen
