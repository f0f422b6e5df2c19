"""Can the shape network read a face's identity from its image at all? Prints one JSON object.

    python benchmarks/shape_readout_probe.py --train data/synth_train --test data/synth_test \
        [--size 64 128] [--widths 32 64 128 128 128 128] [--steps 3000]

A supervised probe, not training as the project does it: the shape network (`cest.networks.ResidualEncoder`,
CEST's input: the view-aligned crop at the *true* viewpoint) is trained on a synthetic set with the true shape
coefficients as its target (mean squared error in the prior's standard deviations, identity and expression),
then scored on held-apart identities like `jobs.synthetic_eval` (3D vertex error, mm after a similarity)
beside the mean face. Where even this supervision leaves the shape at the mean face's error, the image at that
size does not carry the identity for this network, and no self-supervised term can make it; where it does
better, the self-supervised objective is what fails to pass the signal on. One run per --size.
"""

import argparse
import itertools
import json
import math
import time

import numpy as np
import torch

from cest.config import ModelConfig
from cest.eval.synthetic_metrics import vertex_error_mm
from cest.model import expression_standard_deviations
from cest.morphable import load_sfm
from cest.networks import ResidualEncoder
from cest.render.camera import canonical_crop
from jobs.frames import frames_from_rows, read_clip_rows
from jobs.synthetic import read_ground_truth
from jobs.synthetic_eval import truth_tensors


def load_set(directory: str, size: int, frames_per_clip: int, clips: int | None):
    """uint8 images (N, 3, size, size) and their ground truth (`truth_tensors`), clips in file order."""
    truth_by_key = read_ground_truth(directory)
    rows = itertools.islice(read_clip_rows(directory), clips)  # clips None: every clip
    images, truths = [], []
    # 64 clips at a time: a whole set's decoded rows or float images would not fit in memory.
    while group := list(itertools.islice(rows, 64)):
        images.append((frames_from_rows(group, size, frames_per_clip).images * 255).round().to(torch.uint8))
        truths += [truth_by_key[r["segment_key"]] for r in group]
    return torch.cat(images), truth_tensors(truths, with_reflectance=False)


def network_input(images: torch.Tensor, viewpoint: torch.Tensor, init_scale: float) -> torch.Tensor:
    """The shape network's input as CEST builds it (view-aligned crop, [-1, 1]), at the true viewpoint."""
    images = images.float() / 255
    return canonical_crop(images, viewpoint, images.shape[-1], canonical_scale=init_scale) * 2 - 1


def target(truth: dict, expression_sd: torch.Tensor) -> torch.Tensor:
    return torch.cat([truth["alpha_identity"], truth["alpha_expression"] / expression_sd], 1)


def probe(size: int, args, morphable, expression_sd) -> dict:
    torch.manual_seed(args.seed)
    config = ModelConfig()
    start = time.perf_counter()
    train_images, train_truth = load_set(args.train, size, args.frames, args.train_clips)
    test_images, test_truth = load_set(args.test, size, args.frames, None)
    loaded = time.perf_counter() - start
    n_identity = morphable.n_identity
    network = ResidualEncoder(3, n_identity + morphable.n_expression, tuple(args.widths), config.head_init_std)
    network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
    train_target = target(train_truth, expression_sd)
    start = time.perf_counter()
    network.train()
    for step in range(args.steps):
        batch = torch.randint(0, len(train_images), (args.batch,))
        inputs = network_input(train_images[batch], train_truth["viewpoint"][batch], config.init_scale)
        loss = (network(inputs.contiguous(memory_format=torch.channels_last)) - train_target[batch]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    trained = time.perf_counter() - start

    network.eval()
    with torch.no_grad():
        predicted = torch.cat([network(network_input(test_images[i:i + 64], test_truth["viewpoint"][i:i + 64],
                                                     config.init_scale)) for i in range(0, len(test_images), 64)])
    identity, expression = predicted.split([n_identity, morphable.n_expression], 1)
    true_vertices = morphable.shape(test_truth["alpha_identity"], test_truth["alpha_expression"])
    unit = float(morphable.unit_scale_mm)
    fitted = morphable.shape(identity, expression * expression_sd)
    mean_face = morphable.shape(torch.zeros_like(identity), torch.zeros_like(test_truth["alpha_expression"]))
    true_identity = test_truth["alpha_identity"]
    correlation = [float(np.corrcoef(identity[:, k].numpy(), true_identity[:, k].numpy())[0, 1]) for k in range(10)]
    return {"size": size, "train_images": len(train_images), "test_images": len(test_images),
            "final_train_loss": round(loss.item(), 4),
            "vertex_mm": round(float(vertex_error_mm(fitted, true_vertices, unit).mean()), 3),
            "mean_face_mm": round(float(vertex_error_mm(mean_face, true_vertices, unit).mean()), 3),
            "identity_correlation_first_10": [round(c, 2) for c in correlation],
            "predicted_identity_sd_first_10": [round(float(s), 2) for s in identity.std(0)[:10]],
            "seconds_loading": round(loaded, 1), "seconds_training": round(trained, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="a synthetic set with ground_truth/ (python -m jobs.synthetic)")
    parser.add_argument("--test", required=True, help="a held-apart synthetic set (another seed)")
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="input sizes, one probe each")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 128, 128, 128])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--frames", type=int, default=4, help="frames read per training clip")
    parser.add_argument("--train-clips", type=int, help="the first N training clips (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    morphable = load_sfm()
    expression_sd = expression_standard_deviations(morphable)
    print(json.dumps([probe(size, args, morphable, expression_sd) for size in args.size], indent=2))


if __name__ == "__main__":
    main()
