"""Reconstruct your own face, or 3D-annotate a whole corpus as a Ray Data job.

One photo or video -> mesh, overlay, preview, parameters (jobs/face_reconstruction.py lists the files):
    python -m jobs.reconstruct PATH [--checkpoint CKPT | --run-id RUN] [--output DIR] [--smooth SIGMA]
Without --checkpoint or --run-id the project's published CPU-trained model is used (models/cest_cpu.pt,
models/README.md); --run-id names the checkpoint of an MLflow training run. Output: PATH's name + "_cest".
No face, an unreadable file, a missing checkpoint or a landmark model file that cannot be fetched (checked
first): one line on stderr, exit status 2.

A corpus: every frame of a preprocess output (its clip Parquet and 224 crops) or of a folder of videos (the
primary face track of each, cropped as a single video is) gets its parameters:
    python -m jobs.reconstruct --annotate data/clips --output data/params --run-id RUN | --checkpoint CKPT
Output: Parquet files in --output, one row per frame: source, segment_key (a clip's; a video's is
'{speaker_id}/{video_id}/{clip_id}' from its path, as preprocess names its clips), frame_index, viewpoint (7),
alpha_identity, alpha_expression, sh (9), landmarks_source (68 x 2, source pixels), source_to_model_input (2 x 3).
Frames are cropped in Ray tasks and the model runs in actors (`map_batches` with a class; one GPU each when
the cluster has GPUs). Connects to RAY_ADDRESS when set, else starts a local Ray, once the input has passed
its checks: the clip files' footers, or for a folder of videos the landmark model files (one error line when
they cannot be fetched).
Clip files and rows that cannot be read or decoded are skipped, named once each and listed in
OUTPUT/_skipped.jsonl (jobs/data_errors.py; the "_" keeps Parquet readers of OUTPUT from taking it for data); the job fails with one error line when nothing is readable or more
than --max-skipped-fraction of the rows were skipped.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from jobs.face_reconstruction import (CROP_SIZE, VIDEO_SUFFIXES, Reconstructor, ReconstructError, crop_video,
                                     fetch_landmark_models, invert_affine, model_images, parameters, reconstruct,
                                     to_model_pixels)
from pipelines.inputs import make_input


def video_frames(item: dict) -> list[dict]:
    """Frame rows of one video: its primary face track cropped by the pipeline's alignment (none: no face),
    keyed as preprocess keys the video's clips ('{speaker_id}/{video_id}/{clip_id}' from its path), so that
    VoxCeleb's id10001/<video>/00001.mp4 files each get their own key."""
    try:
        crops = crop_video(Path(item["path"]), item["max_frames"])
    except ReconstructError:
        return []
    key = make_input(item["path"]).key
    return [{"source": item["path"], "segment_key": key, "frame_index": int(index),
             "crop": crop, "source_to_crop": matrix.astype(np.float32)}
            for crop, matrix, index in zip(crops.crops, crops.matrices, crops.frame_indices)]


def clip_frames(row: dict, report=None) -> list[dict]:
    """Frame rows of one preprocess clip row (frames_jpeg, crop_transforms: source -> crop); none for a row that
    cannot be read, which goes to `report([skip])` (jobs.data.SkipReporter in the job)."""
    from jobs.data_errors import decode_or_skip

    clip, skip = decode_or_skip(row, str(row.get("path", "")))
    if skip is not None:
        if report is not None:
            report([skip])
        return []
    transforms = np.asarray(clip["crop_transforms"], np.float32).reshape(-1, 2, 3)
    return [{"source": clip["source_path"], "segment_key": clip["segment_key"], "frame_index": int(index),
             "crop": frame, "source_to_crop": matrix}
            for frame, matrix, index in zip(clip["frames"], transforms, clip["frame_indices"])]


class Annotator:
    """Frame rows (numpy batch) -> parameter rows, with one model (a Ray Data actor)."""

    def __init__(self, checkpoint: str):
        import torch

        self.reconstructor = Reconstructor(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, batch: dict) -> dict:
        size = self.reconstructor.image_size
        crops = np.asarray(batch["crop"], np.uint8)
        if crops.shape[1] != CROP_SIZE:  # preprocess outputs made with another crop size
            raise ValueError(f"crops of {crops.shape[1]} px; the model's crops are {CROP_SIZE} px")
        estimate = self.reconstructor.estimate(model_images(crops, size))
        to_model = to_model_pixels(np.asarray(batch["source_to_crop"], np.float64), size)
        values = parameters(estimate, invert_affine(to_model))
        return {"source": batch["source"], "segment_key": batch["segment_key"], "frame_index": batch["frame_index"],
                **{name: array.reshape(len(array), -1) for name, array in values.items()},
                "source_to_model_input": to_model.reshape(len(to_model), -1).astype(np.float32)}


def annotate(source: Path, output: Path, checkpoint: Path, batch_size: int = 32, max_frames: int = 0,
             max_skipped_fraction: float | None = None) -> int:
    """Run the annotation job on the caller's Ray, else on one joined once the input has passed its checks
    (`join_ray`); returns the number of frames written. DataError when no clip file of a preprocess output is
    readable or too many of its rows could not be read (the skips are in OUTPUT/_skipped.jsonl)."""
    import ray

    if (source / "clips").is_dir():
        return annotate_clips(source, output, checkpoint, batch_size, max_skipped_fraction)
    if source.is_dir():
        videos = [{"path": str(p), "max_frames": max_frames} for p in sorted(source.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]
        if not videos:
            raise ReconstructError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) and no clips/ under {source}")
        fetch_landmark_models()  # here, not in each Ray task that finds faces: a missing one is one AssetError
        join_ray()
        write_annotations(ray.data.from_items(videos).flat_map(video_frames), output, checkpoint, batch_size)
        return ray.data.read_parquet(str(output)).count()
    raise ReconstructError(f"{source} is neither a preprocess output nor a folder of videos")


def annotate_clips(source: Path, output: Path, checkpoint: Path, batch_size: int,
                   max_skipped_fraction: float | None) -> int:
    """--annotate of a preprocess output: its readable files (footers checked first), bad rows skipped."""
    import ray

    from cest.config import DataConfig
    from jobs.data import SkipReporter, clip_rows, start_skip_registry
    from jobs.data_errors import SKIP_FILE, DataError, SkipList, survey
    from pipelines.schema import CLIP_SCHEMA

    bound = DataConfig().max_skipped_fraction if max_skipped_fraction is None else max_skipped_fraction
    skips = SkipList(str(output / f"_{SKIP_FILE}"), bound)  # pyarrow and pandas skip "_" files of a dataset
    corpus = survey(str(source), CLIP_SCHEMA.names)
    skips.track(corpus)
    join_ray()
    registry, handle = start_skip_registry(skips)
    try:
        report = SkipReporter(registry)
        rows = clip_rows(corpus, CLIP_SCHEMA.names, report=report)
        write_annotations(rows.flat_map(clip_frames, fn_kwargs={"report": report}), output, checkpoint, batch_size)
        verdict = ray.get(handle.verdict.remote())
    finally:
        ray.kill(handle)
    if verdict is not None:
        raise DataError(verdict)
    return ray.data.read_parquet(str(output)).count()


def join_ray() -> None:
    """Ray for the job: the caller's, else RAY_ADDRESS's cluster, else a new local one (ray.init's order). Joined
    only after the cheap checks, so that an input they refuse costs no Ray start."""
    import ray

    if not ray.is_initialized():
        ray.init()


def write_annotations(frames, output: Path, checkpoint: Path, batch_size: int) -> None:
    """Frame rows (a Ray Dataset) -> parameter rows written to `output` as Parquet."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    annotated = frames.map_batches(Annotator, fn_constructor_kwargs={"checkpoint": str(checkpoint)},
                                   batch_size=batch_size, batch_format="numpy", concurrency=max(1, gpus),
                                   num_gpus=1 if gpus else 0)
    annotated.write_parquet(str(output))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return annotate_main(argv) if "--annotate" in argv else reconstruct_main(argv)


def reconstruct_main(argv: list[str]) -> int:
    """One photo or video with the published model, a checkpoint or an MLflow run's checkpoint."""
    import torch

    from cest.assets import AssetError
    from cest.checkpoint import PUBLISHED_MODEL, CheckpointError
    from jobs.runs import RunError, download_checkpoint

    parser = argparse.ArgumentParser(description="Reconstruct the face of a photo or video")
    parser.add_argument("path", type=Path, help="a photo or a video")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, default=PUBLISHED_MODEL,
                       help="checkpoint.pt, the directory holding it, or a training run's directory "
                            "(default: the published model, models/cest_cpu.pt)")
    model.add_argument("--run-id", help="the MLflow training run whose checkpoint to use")
    parser.add_argument("--output", type=Path, help="output directory (default: PATH's name + _cest)")
    parser.add_argument("--smooth", type=float, default=0.0, metavar="SIGMA",
                        help="video: smooth parameters over time with a Gaussian of SIGMA frames (0: off)")
    parser.add_argument("--max-frames", type=int, default=0, help="video: reconstruct at most this many frames")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    output = args.output or args.path.with_name(args.path.stem + "_cest")
    try:
        fetch_landmark_models()
        checkpoint = download_checkpoint(args.run_id) if args.run_id else args.checkpoint
        reconstructor = Reconstructor(checkpoint, args.device)
        summary = reconstruct(args.path, reconstructor, output, args.smooth, args.max_frames)
    except (ReconstructError, CheckpointError, AssetError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"reconstructed {summary['frames']} frame(s) of {args.path} -> {summary['output']}")
    return 0


def annotate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="3D-annotate a corpus (Ray Data job)")
    parser.add_argument("--annotate", type=Path, required=True, help="a preprocess output or a folder of videos")
    parser.add_argument("--output", type=Path, required=True, help="directory for the parameter Parquet files")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--run-id", help="the MLflow training run whose checkpoint to use")
    model.add_argument("--checkpoint", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-frames", type=int, default=0, help="videos: at most this many frames each (0: all)")
    parser.add_argument("--max-skipped-fraction", type=float, help="share of clip rows that may be skipped as "
                        "unreadable before the job stops (default: data.max_skipped_fraction of cest/config.py)")
    args = parser.parse_args(argv)
    import ray

    from cest.assets import AssetError
    from jobs.data_errors import DataError
    from jobs.runs import RunError, download_checkpoint

    try:
        checkpoint = args.checkpoint or download_checkpoint(args.run_id)
        try:
            count = annotate(args.annotate, args.output, checkpoint, args.batch_size, args.max_frames,
                             args.max_skipped_fraction)
        finally:
            ray.shutdown()
    except (ReconstructError, RunError, DataError, AssetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"annotated {count} frames -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
