"""Publish a trained model: `python -m jobs.publish CHECKPOINT [--output models/cest_cpu.pt]`.

CHECKPOINT is a checkpoint file, its directory or a training run's directory (its newest checkpoint). The
output holds the model, its config, its step and its MLflow run, without the training state, so that it is
small enough to ship in the repository (the published model is at most 10 MB). Write its card in
models/README.md: the data, recipe, steps, time, scores and licences.
"""

import argparse
import hashlib
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cest.checkpoint import PUBLISHED_MODEL, CheckpointError, load_checkpoint, publish_checkpoint


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint file, its directory or a training run directory")
    parser.add_argument("--output", type=Path, default=PUBLISHED_MODEL)
    args = parser.parse_args(argv)
    try:
        target = publish_checkpoint(args.checkpoint, args.output)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    payload = load_checkpoint(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"published {args.checkpoint} -> {target}: {payload['config'].model.variant}, step {payload['step']}, "
          f"{target.stat().st_size / 1e6:.1f} MB, sha256 {digest}, MLflow run {payload['mlflow_run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
