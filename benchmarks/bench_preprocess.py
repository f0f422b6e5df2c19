"""Benchmarks of `make preprocess`, as JSON.

    python benchmarks/bench_preprocess.py [--sections decode,end_to_end,stages,long_video,manifest,tracking,masks]
        [--max-frames 96] [--input DIR (default: the registered sample clips)] [--manifest-rows 1000000]

- decode: CPU seconds and frames/s of each decoder backend (pyav, decord) decoding the whole sample in
  this process (the decoder helper included), and whether both give the same frames.
- end_to_end: the job (embedded local Ray, dlib, tracking) with 1 and 2 CPUs (every process of the
  run pinned to that many cores), and a decode-only job (the same listing and decode, nothing after
  it) as the ceiling. Goals: 2 CPUs >= 1.8 x one CPU;
  end to end within 2x of the decode-only ceiling.
- stages: CPU milliseconds per frame of each stage (decoding, landmarks, face detector, masks, crops,
  encoding, the rest) with every input's stages in this process on one core: the job's work without Ray.
- long_video: peak resident memory of a worker (the process and its decoder helper) processing a long
  video written from the sample's frames, with the default frame buffer and with every frame held.
- manifest: driver time and memory for a manifest of N rows: planning (before the first task), and
  the listing stage (paths resolved, already-done check) run to the end.
- tracking: landmark-model runs, CPU time and agreement with the reference tracker, per tracker setting.
- masks: frame-to-frame steadiness of the skin masks and their top edge's lag behind a moving head,
  before (each frame on its own) and with the segment memories, side by side on the same crops.

On a shared machine wall-clock ratios depend on what else runs, so runs report the CPU seconds used by
this benchmark's process tree and by everything else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cest.assets import fetch_dir  # noqa: E402
from pipelines.config import PreprocessConfig  # noqa: E402
from pipelines.inputs import discover_inputs, input_source  # noqa: E402
from pipelines.preprocess import init_local_ray, resolved_inputs, run  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(root: int) -> float:
    """utime + stime (+ waited-for children) of `root` and all its live descendants, from /proc."""
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = sum(int(value) for value in fields[11:15])
    children = collections.defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(children[pid])
    return total / TICKS


def machine_busy_cpu_seconds() -> float:
    user, nice, system, idle, iowait, *rest = (int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:])
    return (user + nice + system + sum(rest[:3])) / TICKS


@contextlib.contextmanager
def local_ray(cpus: int):
    """A local Ray of `cpus` CPUs whose processes (Ray's own, the tasks and their decoder helpers) all run
    on `cpus` cores: without the pinning, a 1-CPU job's decoder helper ran beside its task on the second
    core (1.28 cores busy), so "2 CPUs vs 1" compared 2 cores with 1.3."""
    import ray

    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(everything)[:cpus])  # inherited by every process Ray starts from here
    init_local_ray(cpus)  # as the job's embedded Ray: a Ray of its own, never another job's cluster
    try:
        yield
    finally:
        ray.shutdown()
        os.sched_setaffinity(0, everything)


def measure(job) -> dict:
    """Run job() -> (frames, seconds); add this tree's and the rest of the machine's CPU seconds."""
    own, busy = process_tree_cpu_seconds(os.getpid()), machine_busy_cpu_seconds()
    frames, seconds = job()
    own = process_tree_cpu_seconds(os.getpid()) - own
    busy = machine_busy_cpu_seconds() - busy
    return {
        "frames": frames,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 2),
        "cpu_seconds_this_job": round(own, 1),
        "frames_per_cpu_second": round(frames / own, 2) if own else 0.0,
        "cores_busy": round(own / seconds, 2),
        "cpu_seconds_other_processes": round(max(0.0, busy - own), 1),
    }


def idle_between_tasks() -> dict:
    """Seconds a worker waited between the end of one input's task and the start of its next (Ray
    Data's scheduling latency), from the timeline of the current Ray session."""
    import ray

    starts = collections.defaultdict(list)
    for event in ray.timeline():
        if event.get("ph") == "X" and event["name"].endswith("_map_task"):
            starts[event["tid"]].append((event["ts"] / 1e6, event["dur"] / 1e6))
    gaps = []
    for tasks in starts.values():
        tasks.sort()
        gaps += [start - (previous + duration) for (previous, duration), (start, _) in zip(tasks, tasks[1:])]
    return {"mean": round(float(np.mean(gaps)), 3) if gaps else 0.0, "total": round(float(np.sum(gaps)), 2)}


def end_to_end(sample: str, cpus: int, tracking: bool, max_frames: int) -> dict:
    def job():
        with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as output:
            args = ["--input", sample, "--output", output, "--max-frames", str(max_frames)]
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
                assert run(args + ([] if tracking else ["--no-tracking"])) == 0
            summary = json.loads((Path(output) / "summary.json").read_text())
        return summary["run"]["frames"], summary["run"]["seconds"]

    with local_ray(cpus):
        return {"cpus": cpus, "tracking": tracking, **measure(job), "idle_between_tasks_s": idle_between_tasks()}


def decode_count(batch, cfg, output_uri):
    """Decode-only stand-in for the processing stage: the same listing, decode and nothing after."""
    import pyarrow as pa

    from pipelines.decode import Reject, VideoStream

    counts = []
    for row in batch.to_pylist():
        try:
            with VideoStream(row["path"], cfg) as stream:
                counts.append(sum(1 for _ in stream.frames()) if row["path"] else 0)
        except Reject:
            counts.append(0)
    return pa.table({"frames": counts})


def decode_only(sample: str, cpus: int, max_frames: int) -> dict:
    import pyarrow.compute as pc

    cfg = PreprocessConfig(max_frames=max_frames)

    def job():
        with tempfile.TemporaryDirectory(prefix="bench-decode-") as output:
            started = time.monotonic()
            dataset = resolved_inputs(input_source(sample), output).repartition(target_num_rows_per_block=1)
            dataset = dataset.map_batches(
                decode_count, batch_size=1, batch_format="pyarrow", fn_kwargs={"cfg": cfg, "output_uri": output}
            )
            # Summed here: Dataset.sum adds shuffle operators whose reserved share kept the decode
            # stage to one task at a time on 2 CPUs.
            batches = dataset.iter_batches(batch_size=None, batch_format="pyarrow")
            frames = sum(int(pc.sum(batch.column("frames")).as_py() or 0) for batch in batches)
            return frames, time.monotonic() - started

    with local_ray(cpus):
        return {"cpus": cpus, **measure(job)}


def decoders(sample: str, max_frames: int) -> list[dict]:
    """Each backend decodes every sample clip in this process; CPU seconds include the helper."""
    from pipelines.decode import decode_video

    paths = [item.path for item in discover_inputs(sample)]
    results, frames_by_backend = [], {}
    for backend in ("pyav", "decord"):
        cfg = PreprocessConfig(decoder=backend, max_frames=max_frames)
        decode_video(paths[0], cfg)  # start the helper and load the decoder

        def job():
            started = time.monotonic()
            videos = [decode_video(path, cfg) for path in paths]
            frames_by_backend[backend] = [video.frame_indices.tolist() for video in videos]
            return sum(len(video.frames) for video in videos), time.monotonic() - started

        results.append({"decoder": backend, **measure(job)})
    same = frames_by_backend["pyav"] == frames_by_backend["decord"]
    return results + [{"same_frame_indices": same}]


def _landmark_errors(videos: list[dict], references: list[dict]) -> list[float]:
    """Mean point distance / eye-centre distance of the reference, on every frame both hold."""
    return [
        np.linalg.norm(video[p] - reference[p], axis=1).mean()
        / np.linalg.norm(reference[p][36:42].mean(axis=0) - reference[p][42:48].mean(axis=0))
        for video, reference in zip(videos, references)
        for p in set(video) & set(reference)
    ]


def tracking_modes(sample: str, max_frames: int) -> list[dict]:
    """The tracker's settings on the sample's decoded frames (dlib): landmark-model runs per frame, CPU
    seconds, and the mean landmark distance (/ eye-centre distance) to the reference tracker
    (window 1, every frame re-centred) and to the detector run on every frame, on the frames both keep. Windows are forced on for dlib
    here (it does not batch, so they cost it nothing and save nothing) to measure their accuracy."""
    from pipelines.decode import decode_video
    from pipelines.landmarks import DlibLandmarker
    from pipelines.tracking import FaceTracker

    class CountingDlib(DlibLandmarker):
        runs = 0

        def landmarks(self, image, boxes):
            self.runs += len(boxes)
            return super().landmarks(image, boxes)

    landmarker = CountingDlib()
    videos = [decode_video(item.path, PreprocessConfig(max_frames=max_frames)).frames for item in discover_inputs(sample)]
    detected = []  # detector on every frame: the reference the tracking tests use
    for frames in videos:
        tracks, _ = FaceTracker(landmarker, PreprocessConfig(tracking=False)).track(frames)
        detected.append({p: points for positions, points in tracks for p, points in zip(positions, points)})
    modes = [("always_recentre", 0.0, 1), ("recentre_when_off", PreprocessConfig().recentre_tolerance, 1)]
    modes += [(f"window_{window}", PreprocessConfig().recentre_tolerance, window) for window in (4, 8, 16)]
    reference, results = None, []
    for name, tolerance, window in modes:
        cfg = PreprocessConfig(max_frames=max_frames, recentre_tolerance=tolerance, track_window=window)
        landmarker.runs, landmarker.batches_frames, started, kept = 0, window > 1, time.process_time(), []
        for frames in videos:
            tracks, _ = FaceTracker(landmarker, cfg).track(frames)
            kept.append({p: points for positions, points in tracks for p, points in zip(positions, points)})
        seconds = time.process_time() - started
        reference = reference or kept
        errors, detector_errors = _landmark_errors(kept, reference), _landmark_errors(kept, detected)
        frames = sum(len(video) for video in kept)
        results.append(
            {
                "mode": name,
                "recentre_tolerance": tolerance,
                "track_window": window,
                "frames_kept": frames,
                "frames_kept_by_reference": sum(len(video) for video in reference),
                "landmark_runs_per_frame": round(landmarker.runs / max(1, frames), 3),
                "cpu_seconds": round(seconds, 2),
                "mean_error_vs_reference_interocular": round(float(np.mean(errors)), 5),
                "p99_error_vs_reference_interocular": round(float(np.percentile(errors, 99)), 5),
                "mean_error_vs_detector_every_frame_interocular": round(float(np.mean(detector_errors)), 5),
            }
        )
    return results


def long_video(sample: str, frames: int) -> list[dict]:
    """Peak RSS of one worker process (and its decoder helper) on a long video, two buffer settings."""
    import subprocess

    from pipelines.decode import decode_video

    with tempfile.TemporaryDirectory(prefix="bench-long-") as directory:
        sys.path.insert(0, str(ROOT / "tests"))
        from video_files import encode

        clip = decode_video(str(Path(sample) / "id10019" / "lpd0" / "00001.mp4"), PreprocessConfig()).frames
        back_and_forth = np.concatenate([clip, clip[::-1]])
        # The clip back and forth, each frame shifted in brightness by its number: no frame repeats an
        # earlier one (the replay filter would drop it), written frame by frame (never held whole).
        looped = (np.clip(back_and_forth[i % len(back_and_forth)].astype(np.int16) + (i % 7) - 3, 0, 255).astype(np.uint8) for i in range(frames))
        path = encode(Path(directory) / "long.mp4", looped)
        results = []
        frame_mib = clip[0].nbytes / 2**20
        for buffered in (PreprocessConfig().max_buffered_mib, int(frames * frame_mib) + 1):
            code = (
                "import json, time\n"
                "from pipelines.config import PreprocessConfig\n"
                "from pipelines.decode import _HELPER\n"
                "from pipelines.inputs import make_input\n"
                "from pipelines.landmarks import DlibLandmarker\n"
                "from pipelines.masks import SkinRegionMasker\n"
                "from pipelines.stages import input_rows\n"
                f"cfg = PreprocessConfig(max_buffered_mib={buffered}, primary_face_only=False)\n"
                "started = time.monotonic()\n"
                f"rows = [row['num_frames'] for row in input_rows(make_input({str(path)!r}), cfg, DlibLandmarker(), SkinRegionMasker())]\n"
                "seconds = time.monotonic() - started\n"
                "def peak_mb(pid):  # VmHWM: this process image's own peak (ru_maxrss keeps the forking parent's)\n"
                "    line = [l for l in open(f'/proc/{pid}/status') if l.startswith('VmHWM')][0]\n"
                "    return int(line.split()[1]) // 1024\n"
                "helper = peak_mb(_HELPER._process.pid)\n"
                "_HELPER.stop()\n"
                "print(json.dumps({'frames_written': sum(rows), 'seconds': round(seconds, 1),"
                " 'peak_rss_worker_mb': peak_mb('self'), 'peak_rss_decoder_helper_mb': helper}))\n"
            )
            env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
            output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if output.returncode:
                results.append({"max_buffered_mib": buffered, "failed": output.stderr[-1500:]})
                continue
            results.append({"video_frames": frames, "frame_size": list(clip.shape[1:3]), "max_buffered_mib": buffered, **json.loads(output.stdout.strip().splitlines()[-1])})
        return results


def manifest(rows: int) -> dict:
    """Driver time and memory for an N-row manifest: planning, then the listing stage to the end."""
    import resource
    import tracemalloc

    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as directory:
        path = Path(directory) / "manifest.csv"
        with path.open("w") as handle:
            handle.write("path,speaker_id\n")
            for start in range(0, rows, 100_000):
                handle.write("".join(f"clips/{index:07d}.mp4,id{index % 6000:05d}\n" for index in range(start, min(rows, start + 100_000))))
        with local_ray(2):
            output = str(Path(directory) / "out")
            resolved_inputs(input_source(str(path)), output)  # imports and Ray Data set-up
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            tracemalloc.start()
            started = time.monotonic()
            dataset = resolved_inputs(input_source(str(path)), output)
            planning = time.monotonic() - started
            planning_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            started = time.monotonic()
            count = dataset.count()
            listing = time.monotonic() - started
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return {
        "rows": rows,
        "listed": count,
        "driver_planning_seconds": round(planning, 3),
        "driver_planning_python_allocations_mb": round(planning_peak / 1e6, 2),
        "listing_stage_seconds": round(listing, 1),
        "driver_peak_rss_mb_before": rss_before,
        "driver_peak_rss_mb_after_listing": rss_after,
    }


class StageTimers:
    """CPU seconds (this thread) spent in named functions, by wrapping them where the stages look them up."""

    def __init__(self):
        self.seconds = collections.Counter()
        self._restore = []

    def wrap(self, owner, name: str, key: str):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] += time.thread_time() - started

        setattr(owner, name, timed)
        self._restore.append((owner, name, original))

    def restore(self):
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)


def stage_costs(sample: str, max_frames: int) -> dict:
    """CPU milliseconds per written frame of each stage: every sample input through all stages in this
    process (the job's work without Ray), pinned to one core, next to a pass that only decodes (the
    decode-only job's work). Decoding includes the decoder helper, the frames' transfer and the replay
    filter; the rest is timed where the stages call it."""
    import pipelines.stages
    from pipelines.decode import VideoStream
    from pipelines.identity import FaceIdentity
    from pipelines.landmarks import DlibLandmarker
    from pipelines.masks import SkinRegionMasker
    from pipelines.output import Output
    from pipelines.stages import input_rows, write_rows

    cfg, items = PreprocessConfig(max_frames=max_frames), discover_inputs(sample)
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(everything)[:1])  # the decoder helper shares the core, as in a 1-CPU job
    timers = StageTimers()
    try:
        landmarker, identity = DlibLandmarker(), FaceIdentity()
        with VideoStream(items[0].path, cfg) as stream:  # start the decoder helper
            next(iter(stream.frames()))
        started, decoded = process_tree_cpu_seconds(os.getpid()), 0
        for item in items:
            with VideoStream(item.path, cfg) as stream:
                decoded += sum(1 for _ in stream.frames())
        decode_seconds = process_tree_cpu_seconds(os.getpid()) - started
        timers.wrap(landmarker, "landmarks", "landmarks (68-point model)")
        timers.wrap(landmarker, "detect", "face detector")
        timers.wrap(identity, "descriptor", "identity (clips with several tracks)")
        timers.wrap(SkinRegionMasker, "__call__", "masks")
        for name in ("warp", "source_coverage"):
            timers.wrap(pipelines.stages, name, "crops")
        for name in ("encode_jpeg", "encode_mask_png"):
            timers.wrap(pipelines.stages, name, "JPEG and PNG encoding")
        with tempfile.TemporaryDirectory(prefix="bench-stages-") as directory:
            output = Output(directory)
            started, frames = process_tree_cpu_seconds(os.getpid()), 0
            for item in items:
                rows = input_rows(item, cfg, landmarker, SkinRegionMasker(), identity)
                frames += write_rows(item, rows, output)["num_frames"]
            total_seconds = process_tree_cpu_seconds(os.getpid()) - started
    finally:
        timers.restore()
        os.sched_setaffinity(0, everything)
    timed = dict(timers.seconds)
    rest = total_seconds - decode_seconds - sum(timed.values())
    per_frame = {"decoding": decode_seconds, **timed, "rest (tracking logic, alignment, rows, writing)": rest}
    return {
        "frames_decoded": decoded,
        "frames_written": frames,
        "cpu_seconds_all_stages": round(total_seconds, 2),
        "cpu_seconds_decoding_only": round(decode_seconds, 2),
        "cpu_ms_per_written_frame": {name: round(1000 * seconds / frames, 3) for name, seconds in per_frame.items()},
        "decoding_share": round(decode_seconds / total_seconds, 3),
    }


MASK_VARIANTS = {  # SkinRegionMasker options; the last is the default
    "each frame on its own (before)": dict(boundary_memory=0.0, pixel_memory=0.0, forehead_component=False, dark_tolerance=0.0),
    "skin model memory 0.5": dict(memory=0.5, boundary_memory=0.0, pixel_memory=0.0, forehead_component=False, dark_tolerance=0.0),
    "boundary averaged": dict(pixel_memory=0.0, forehead_component=False, dark_tolerance=0.0),
    "boundary and pixels averaged": dict(forehead_component=False, dark_tolerance=0.0),
    "and forehead component": dict(dark_tolerance=0.0),
    "default (and darker than skin is out)": dict(),
}


def mask_stability(sample: str, max_frames: int) -> list[dict]:
    """Frame-to-frame steadiness of the skin masks: the sample's crops (tracked and aligned once) are
    masked again with each of MASK_VARIANTS; IoU of consecutive masks over the whole mask and over the
    forehead band (above the brows), the mask's share of the landmark face region, and how far the
    mask's top edge over the nose bridge is from the same variant's without memories on jitter-free
    landmarks (Gaussian, sigma 2 frames, centred: it cannot lag), over all frames and where the head
    moves > 1 px a frame."""
    from pipelines.landmarks import DlibLandmarker
    from pipelines.masks import SkinRegionMasker
    from pipelines.schema import decode_clip_row
    from pipelines.stages import input_rows

    cfg = PreprocessConfig(max_frames=max_frames)
    landmarker, clips = DlibLandmarker(), []
    for item in discover_inputs(sample):
        for row in input_rows(item, cfg, landmarker, SkinRegionMasker()):
            if row["row_kind"] == "clip":
                clip = decode_clip_row(row)
                clips.append((clip["frames"], clip["landmarks"]))
    references = {
        forehead: [_reference_top_edges(frames, landmarks, forehead) for frames, landmarks in clips] for forehead in (False, True)
    }
    return [
        _mask_variant(name, options, clips, references[options.get("forehead_component", True)])
        for name, options in MASK_VARIANTS.items()
    ]


def _reference_top_edges(frames, landmarks, forehead_component: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T,) top-edge row of a memoryless mask on smoothed landmarks, (T,) its column (nose bridge),
    (T,) whether the head moves > 1 px a frame there (the smoothed upper boundary's speed)."""
    from scipy.ndimage import gaussian_filter1d

    from pipelines.masks import SkinRegionMasker, raised_brows

    smooth = gaussian_filter1d(landmarks, 2.0, axis=0, mode="nearest")
    masker = SkinRegionMasker(boundary_memory=0.0, pixel_memory=0.0, forehead_component=forehead_component).for_segment()
    columns = np.clip(smooth[:, 27, 0].astype(int), 0, frames.shape[2] - 1)
    tops = np.array([_top_edge(masker(frame, points), column) for frame, points, column in zip(frames, smooth, columns)])
    boundary = np.array([raised_brows(points)[:, 1].mean() for points in smooth])
    return tops, columns, np.abs(np.gradient(boundary)) > 1.0


def _top_edge(mask: np.ndarray, column: int) -> float:
    rows = np.flatnonzero(mask[:, column])
    return float(rows[0]) if len(rows) else np.nan


def _mask_variant(name: str, options: dict, clips, references) -> dict:
    from pipelines.masks import SkinRegionMasker, face_region

    whole, forehead, share, errors, moving = [], [], [], [], []
    for (frames, landmarks), (reference, columns, motion) in zip(clips, references):
        masker = SkinRegionMasker(**options).for_segment()
        masks = [masker(frame, points).astype(bool) for frame, points in zip(frames, landmarks)]
        errors.append(np.array([_top_edge(mask, column) for mask, column in zip(masks, columns)]) - reference)
        moving.append(motion)
        for index, (mask, points) in enumerate(zip(masks, landmarks)):
            region = face_region(points, mask.shape).astype(bool)
            share.append(mask.sum() / max(1, region.sum()))
            if index == 0:
                continue
            band = np.zeros_like(mask)
            band[: int(points[17:27, 1].min())] = True
            for values, area in ((whole, np.ones_like(mask)), (forehead, band)):
                a, b = masks[index - 1] & area, mask & area
                if (a | b).any():
                    values.append((a & b).sum() / (a | b).sum())
    errors, moving = np.abs(np.concatenate(errors)), np.concatenate(moving)
    return {
        "masker": name,
        "options": options,
        "clips": len(clips),
        "iou_consecutive": round(float(np.mean(whole)), 4),
        "iou_consecutive_forehead": round(float(np.mean(forehead)), 4),
        "forehead_iou_below_0.8_share": round(float(np.mean(np.asarray(forehead) < 0.8)), 4),
        "mask_share_of_face_region": round(float(np.mean(share)), 4),
        "top_edge_error_px_mean": round(float(np.nanmean(errors)), 2),
        "top_edge_error_px_p95": round(float(np.nanpercentile(errors, 95)), 2),
        "moving_frames": int(moving.sum()),
        "top_edge_error_px_moving_mean": round(float(np.nanmean(errors[moving])), 2),
        "top_edge_error_px_moving_p95": round(float(np.nanpercentile(errors[moving], 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", help="videos directory (default: the sample clips, through cest.assets)")
    parser.add_argument("--max-frames", type=int, default=96, help="frames per clip (0: all)")
    parser.add_argument("--sections", default="decode,end_to_end,long_video,manifest")
    parser.add_argument("--long-video-frames", type=int, default=1500)
    parser.add_argument("--manifest-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    args.input = args.input or str(fetch_dir("voxceleb_sample"))
    sections = args.sections.split(",")
    results = {
        "machine": {"cpus_visible": os.cpu_count(), "load_average_at_start": os.getloadavg(), "python": platform.python_version()},
        "max_frames_per_clip": args.max_frames,
    }
    if "decode" in sections:
        results["decoders"] = decoders(args.input, args.max_frames)
    if "end_to_end" in sections:
        results["decode_only"] = [decode_only(args.input, cpus, args.max_frames) for cpus in (1, 2)]
        results["end_to_end"] = [end_to_end(args.input, cpus, True, args.max_frames) for cpus in (1, 2)]
        fps = {row["cpus"]: row["frames_per_second"] for row in results["end_to_end"]}
        ceiling = {row["cpus"]: row["frames_per_second"] for row in results["decode_only"]}
        results["speedup_2_vs_1_cpu"] = round(fps[2] / fps[1], 2)
        results["end_to_end_vs_decode_only"] = {f"{cpus}_cpu": round(fps[cpus] / ceiling[cpus], 2) for cpus in (1, 2)}
    if "long_video" in sections:
        results["long_video"] = long_video(args.input, args.long_video_frames)
    if "manifest" in sections:
        results["manifest"] = manifest(args.manifest_rows)
    if "stages" in sections:
        results["stages"] = stage_costs(args.input, args.max_frames)
    if "tracking" in sections:
        results["tracking"] = tracking_modes(args.input, args.max_frames)
    if "masks" in sections:
        results["mask_stability"] = mask_stability(args.input, args.max_frames)
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
