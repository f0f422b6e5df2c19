"""Measure the pixel convention of AFLW2000-3D's pt3d_68 against the images: prints JSON.

dlib's 68 landmarks (pipelines.landmarks, our convention: pixel centres at +0.5) are compared with pt3d_68 as
stored (no offset applied) on the inner 51 points. A detector's own constant horizontal bias is cancelled by
averaging each image with its mirror image (detections on the flipped image mapped back: x -> W - x; the
inner-51 set maps onto itself, so its mean needs no point permutation). Expected mean horizontal offset:
+0.5 px if pt3d_68 is in 1-based coordinates (first pixel centred at 1), -0.5 px for 0-based indices (centred
at 0), 0 for our convention (centred at 0.5). Vertical offsets are printed for reference only: no flip
cancels the detector's vertical bias. Per-image annotation offsets are about 1-2 px, so this settles the
half pixel only over many images (the full 2,000; the 8-image sample cannot).

    python benchmarks/aflw2000_pixel_convention.py [--folder AFLW2000]   # default: the asset sample
"""

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from scipy.io import loadmat

from cest.assets import fetch
from pipelines.landmarks import DlibLandmarker

INNER = slice(17, 68)


def detected(landmarker: DlibLandmarker, image: np.ndarray) -> np.ndarray | None:
    boxes = landmarker.detect(image)
    return landmarker.landmarks(image, boxes[:1])[0].astype(np.float64) if len(boxes) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="AFLW2000 folder of .jpg + .mat (default: the asset sample)")
    args = parser.parse_args()
    if args.folder:
        images = sorted(args.folder.glob("*.jpg"))
    else:
        images = [fetch(f"aflw2000_sample/image{n}.jpg") for n in
                  ("00050", "00081", "00251", "00430", "00475", "00514", "00516", "01038")]
    landmarker = DlibLandmarker(upsample=1)
    x_offsets, y_offsets, skipped = [], [], 0
    for path in images:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        stored = loadmat(str(path.with_suffix(".mat")))["pt3d_68"][:2].T
        direct, mirrored = detected(landmarker, image), detected(landmarker, np.ascontiguousarray(image[:, ::-1]))
        if direct is None or mirrored is None:
            skipped += 1
            continue
        mirrored[:, 0] = image.shape[1] - mirrored[:, 0]
        x_offsets.append(stored[INNER, 0].mean() - (direct[INNER, 0].mean() + mirrored[INNER, 0].mean()) / 2)
        y_offsets.append(stored[INNER, 1].mean() - direct[INNER, 1].mean())
    x, y = np.array(x_offsets), np.array(y_offsets)
    print(json.dumps({
        "images": len(x), "no_face": skipped,
        "stored_minus_detected_x_px": {"mean": float(x.mean()), "standard_error": float(x.std(ddof=1) / np.sqrt(len(x)))},
        "stored_minus_detected_y_px": {"mean": float(y.mean()), "standard_error": float(y.std(ddof=1) / np.sqrt(len(y)))},
    }, indent=1))


if __name__ == "__main__":
    main()
