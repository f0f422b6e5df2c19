"""How much of a face's 3D shape do its 2D landmarks determine? Prints one JSON object.

    python benchmarks/landmark_shape_ceiling.py --data data/synth_test [--size 64]

On a synthetic set (python -m jobs.synthetic), fits the shape coefficients (identity and expression, in the
prior's standard deviations) to the exact projected landmarks at the true viewpoint (L-BFGS on the squared
pixel error plus prior_weight * the squared coefficients), for several prior weights, with the landmarks
rounded to a pixel grid of --size and with Gaussian noise added, and reports the 3D vertex error (mm, after a
similarity, as jobs.synthetic_eval scores it) against the mean face's. It bounds what a network can learn
about shape from the landmark term alone, and tells how precise its landmarks must be for that.
"""

import argparse
import json

import torch

from cest.eval.synthetic_metrics import vertex_error_mm
from cest.model import expression_standard_deviations
from cest.morphable import load_sfm
from cest.render.camera import project
from jobs.synthetic import read_ground_truth
from jobs.synthetic_eval import truth_tensors


def fit_shape(morphable, expression_sd, target, viewpoint, size, prior_weight) -> torch.Tensor:
    """Shape coefficients (B, K_id + K_exp) in sd whose projected landmarks best match `target` (B, 68, 2)."""
    counts = [morphable.n_identity, morphable.n_expression]
    alpha = torch.zeros(target.shape[0], sum(counts), requires_grad=True)
    optimizer = torch.optim.LBFGS([alpha], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        identity, expression = alpha.split(counts, 1)
        vertices = morphable.shape(identity, expression * expression_sd)
        projected = project(vertices[:, morphable.landmark_indices], viewpoint, size)[..., :2]
        loss = (projected - target).square().sum(-1).mean() + prior_weight * alpha.square().sum(-1).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return alpha.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a synthetic set with ground_truth/")
    parser.add_argument("--size", type=int, default=64, help="image size of the landmarks (pixels)")
    parser.add_argument("--noise-px", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    torch.manual_seed(0)
    morphable = load_sfm()
    expression_sd = expression_standard_deviations(morphable)
    truth = truth_tensors(list(read_ground_truth(args.data).values()), with_reflectance=False)
    viewpoint = truth["viewpoint"]
    true_vertices = morphable.shape(truth["alpha_identity"], truth["alpha_expression"])
    exact = project(true_vertices[:, morphable.landmark_indices], viewpoint, args.size)[..., :2]
    unit = float(morphable.unit_scale_mm)
    mean_face = morphable.shape(torch.zeros_like(truth["alpha_identity"]), torch.zeros_like(truth["alpha_expression"]))

    def error(target, prior_weight) -> float:
        alpha = fit_shape(morphable, expression_sd, target, viewpoint, args.size, prior_weight)
        identity, expression = alpha.split([morphable.n_identity, morphable.n_expression], 1)
        fitted = morphable.shape(identity, expression * expression_sd)
        return round(float(vertex_error_mm(fitted, true_vertices, unit).mean()), 3)

    report = {"data": args.data, "images": int(viewpoint.shape[0]), "size": args.size,
              "mean_face_mm": round(float(vertex_error_mm(mean_face, true_vertices, unit).mean()), 3),
              "exact_landmarks_mm": {str(w): error(exact, w) for w in (0.0, 1e-3, 1e-2, 1e-1)},
              "landmarks_noisy_mm": {}}
    for noise in args.noise_px:
        noisy = exact + noise * torch.randn_like(exact)
        # The prior weight that balances the noise: pixel variance over the prior's unit variance.
        report["landmarks_noisy_mm"][f"{noise}px"] = {str(w): error(noisy, w) for w in (noise ** 2 / 10, noise ** 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
