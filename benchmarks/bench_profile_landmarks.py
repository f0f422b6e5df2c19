"""Detection rate, 68-point NME and CPU time per yaw bin on AFLW2000-3D of the landmark backends: prints JSON.

    python benchmarks/bench_profile_landmarks.py [--folder AFLW2000]   # default: the asset sample (8 images)

Each image goes through the preprocessing pipeline's landmarker (`make_landmarker` of a PreprocessConfig)
as a one-frame clip does: detect on the whole image, 68 landmarks on the largest box. AFLW2000-3D's images
(450 x 450) are below the pipeline's working size (`max_side` 512), so the working frame is the image itself.

Ground truth and NME as `cest.eval.metrics` reads them (3DDFA protocol): pt3d_68 (1-based pixels) shifted into our
convention, NME = mean point distance / sqrt(w h) of the ground-truth box, yaw bins from Pose_Para's yaw
(|yaw| <= 30, (30, 60], > 60 degrees). NME is over the images with a detection; `detected` counts them.
CPU seconds are this process's (time.process_time) for detection + landmarks, per image.

Variants: `mediapipe` (BlazeFace + face mesh, pipelines/face_mesh.py), dlib's `hog` (the HOG detector alone),
`hog_cnn` (the CNN detector where HOG finds nothing, on the image as it is), `hog_cnn_upsample1` (the same
with the CNN run on the image upsampled 2x), and `fan` (face-alignment's S3FD + 2D FAN on the CPU) with
--fan, which needs its weights in the torch hub cache (downloaded there on first use).
`nme68_pct_common_0_30` compares the backends on the frontal images every variant found.
"""

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from cest.assets import fetch_dir
from cest.eval.metrics import YAW_BIN_NAMES, aflw2000_summary, landmark_nme, read_aflw2000_mat, yaw_bin
from pipelines.config import PreprocessConfig
from pipelines.landmarks import make_landmarker

VARIANTS = {
    "mediapipe": PreprocessConfig(detector="mediapipe"),
    "hog": PreprocessConfig(detector="dlib", dlib_cnn_fallback=False),
    "hog_cnn": PreprocessConfig(detector="dlib", dlib_cnn_fallback=True, dlib_cnn_upsample=0),
    "hog_cnn_upsample1": PreprocessConfig(detector="dlib", dlib_cnn_fallback=True, dlib_cnn_upsample=1),
}
FAN = PreprocessConfig(detector="fan", device="cpu")


def measure(config: PreprocessConfig, images: list[np.ndarray], truths: list[np.ndarray]) -> list[dict]:
    """Per image: found (bool), nme (fraction or None), cpu_s."""
    landmarker = make_landmarker(config)
    results = []
    for image, truth in zip(images, truths):
        started = time.process_time()
        boxes = landmarker.detect(image)
        landmarks = landmarker.landmarks(image, boxes[:1])
        cpu_s = time.process_time() - started
        nme = float(landmark_nme(landmarks[0], truth)) if len(boxes) else None
        results.append({"found": bool(len(boxes)), "nme": nme, "cpu_s": cpu_s})
    return results


def summarise(results: list[dict], yaws: np.ndarray) -> dict:
    found = np.array([result["found"] for result in results])
    bins = yaw_bin(yaws)
    summary = {f"detected_{name}": f"{int(found[bins == index].sum())}/{int((bins == index).sum())}"
               for index, name in enumerate(YAW_BIN_NAMES)}
    nme = np.array([result["nme"] for result in results if result["found"]], np.float64)
    summary.update(aflw2000_summary(nme, yaws[found], prefix="nme68"))
    cpu = np.array([result["cpu_s"] for result in results])
    summary["cpu_s_per_image_mean"] = float(cpu.mean())
    summary["cpu_s_per_image_max"] = float(cpu.max())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="AFLW2000 folder of .jpg + .mat (default: the asset sample)")
    parser.add_argument("--fan", action="store_true", help="also FAN on the CPU (its weights from the torch hub cache)")
    args = parser.parse_args()
    folder = args.folder or fetch_dir("aflw2000_sample")
    paths = sorted(Path(folder).glob("*.jpg"))
    images = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in paths]
    annotations = [read_aflw2000_mat(path.with_suffix(".mat")) for path in paths]
    truths = [annotation.landmarks for annotation in annotations]
    yaws = np.array([annotation.yaw for annotation in annotations])
    variants = VARIANTS | ({"fan": FAN} if args.fan else {})
    per_variant = {name: measure(config, images, truths) for name, config in variants.items()}
    summaries = {name: summarise(results, yaws) for name, results in per_variant.items()}
    frontal_found_by_all = (yaw_bin(yaws) == 0) & np.all(
        [[result["found"] for result in results] for results in per_variant.values()], axis=0
    )
    for name, results in per_variant.items():
        common = [results[index]["nme"] for index in np.nonzero(frontal_found_by_all)[0]]
        summaries[name]["nme68_pct_common_0_30"] = round(100 * float(np.mean(common)), 2)
    print(json.dumps({
        "images": len(paths),
        "frontal_images_found_by_all": int(frontal_found_by_all.sum()),
        "variants": summaries,
        "per_image": [
            {"image": path.stem, "yaw_deg": round(float(np.degrees(yaw)), 1)}
            | {name: {"found": results[index]["found"],
                      "nme_pct": None if results[index]["nme"] is None else round(100 * results[index]["nme"], 2),
                      "cpu_s": round(results[index]["cpu_s"], 3)}
               for name, results in per_variant.items()}
            for index, (path, yaw) in enumerate(zip(paths, yaws))
        ],
    }, indent=1))


if __name__ == "__main__":
    main()
