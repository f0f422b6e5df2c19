"""Which way faces turn: in training clips, and in a model's estimates of the AFLW2000-3D sample.

    python benchmarks/turn_direction.py --clips demo/clips                       # the clips' balance
    python benchmarks/turn_direction.py --checkpoint demo/runs/demo-cest models/cest_cpu.pt

--clips: per clip, the nose tip's offset from the jaw's midpoint as a share of the jaw's width (landmarks 30, 0
and 16), averaged over its frames: negative and positive are the two directions of a turn, about +-0.5 at
profile. --checkpoint: per sample image, the model's yaw on the oracle crop (the rotation's angle about the
face's up axis, in AFLW2000-3D's sign convention) beside the dataset's. A model that learnt one direction from
unbalanced clips turns every profile that way (docs/model.md, "The published model and the demo").
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch


def clip_offsets(folder: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    offsets = []
    for path in sorted(folder.rglob("*.parquet")):
        for row in pq.read_table(path, columns=["landmarks", "num_frames"]).to_pylist():
            points = np.asarray(row["landmarks"], np.float32).reshape(row["num_frames"], 68, 2)
            jaw_width = points[:, 16, 0] - points[:, 0, 0]
            offsets.append(float(((points[:, 30, 0] - (points[:, 0, 0] + points[:, 16, 0]) / 2) / jaw_width).mean()))
    if not offsets:
        raise SystemExit(f"{folder}: no Parquet clip files")
    return np.array(offsets)


def model_yaws(checkpoint: str, items: list[dict]) -> np.ndarray:
    from cest.checkpoint import load_model
    from cest.render.camera import rotation_matrix
    from jobs.face_reconstruction import model_images

    model, config, _ = load_model(checkpoint)
    crops = model_images(np.stack([item["oracle_crop"] for item in items]), config.model.image_size)
    with torch.no_grad():
        rotation = rotation_matrix(model(crops, geometry_only=True).viewpoint[:, 1:4])
    return torch.rad2deg(torch.asin(rotation[:, 2, 0].clamp(-1, 1))).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, help="a clips folder of `make preprocess`")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="checkpoint files or run folders")
    args = parser.parse_args()
    if args.clips:
        offsets = clip_offsets(args.clips)
        print(f"{len(offsets)} clips: {int((offsets < 0).sum())} turned one way (offset < 0), "
              f"{int((offsets > 0).sum())} the other; most turned {offsets.min():.2f} / {offsets.max():.2f}")
        print("offsets:", " ".join(f"{value:.2f}" for value in np.sort(offsets)))
    if args.checkpoint:
        from cest import assets
        from jobs.eval import aflw2000_items, prepare_aflw2000

        items = [prepare_aflw2000(item) for item in aflw2000_items(Path(assets.fetch_dir("aflw2000_sample")))]
        print("image        " + " ".join(f"{item['name']:>11}" for item in items))
        print("true yaw     " + " ".join(f"{math.degrees(item['yaw']):11.1f}" for item in items))
        for checkpoint in args.checkpoint:
            print(" ".join(f"{value:11.1f}" for value in model_yaws(checkpoint, items)).rjust(13 + 12 * len(items) - 1),
                  checkpoint)


if __name__ == "__main__":
    main()
