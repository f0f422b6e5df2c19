"""What a trained model's shape network outputs, and what the objective pays for it. Prints one JSON object.

    python benchmarks/shape_diagnosis.py --checkpoint runs/x --data data/synth_test [--clips 48]

On a synthetic set (python -m jobs.synthetic; a training set's own clips tell a generalisation gap from a
failure to fit):
- the predicted identity and expression coefficients' spread across faces and their correlation with the truth,
  per coefficient (a network that outputs one shape for every face has a spread near 0);
- the 3D shape error (mm, as jobs.synthetic_eval scores it) of the estimate, and of the estimate given the true
  viewpoint (pose errors excluded), beside reference shapes: the mean face, the true identity without
  expression and the true expression on the mean identity (which part of the shape error is which);
- the training objective's geometry terms (w_landmark x landmark, w_regulariser x prior; the model's own config)
  for the predicted, zero and true coefficients at the predicted and at the true viewpoint: whether the true shape
  would lower the loss the network sees.
"""

import argparse
import json

import numpy as np
import torch

from cest.checkpoint import load_model
from cest.config import LossConfig
from cest.eval.synthetic_metrics import vertex_error_mm
from cest.losses import landmark_loss, shape_regulariser
from cest.render.camera import project
from jobs.frames import frames_from_rows, read_clip_rows
from jobs.synthetic import read_ground_truth
from jobs.synthetic_eval import truth_tensors


def rounded(values) -> list[float]:
    return [round(float(v), 3) for v in values]


@torch.no_grad()
def diagnose(model, data: str, clips: int, loss: LossConfig) -> dict:
    model.eval()
    morphable, size = model.morphable, model.config.image_size
    truth_by_key = read_ground_truth(data)
    rows = list(read_clip_rows(data))[:clips]
    unit = float(morphable.unit_scale_mm)
    predicted, true, terms = [], [], {}
    errors = {name: [] for name in ("estimate", "true_viewpoint", "mean_face", "true_identity_no_expression",
                                    "true_expression_mean_identity")}
    for first in range(0, len(rows), 8):
        group = rows[first:first + 8]
        frames = frames_from_rows(group, size, max(r["num_frames"] for r in group))
        truth = truth_tensors([truth_by_key[r["segment_key"]] for r in group], with_reflectance=False)
        true_vertices = morphable.shape(truth["alpha_identity"], truth["alpha_expression"])
        estimate = model(frames.images, geometry_only=True)
        given_pose = model(frames.images, truth["viewpoint"], geometry_only=True)
        errors["estimate"].append(vertex_error_mm(estimate.vertices, true_vertices, unit))
        errors["true_viewpoint"].append(vertex_error_mm(given_pose.vertices, true_vertices, unit))
        no_identity = torch.zeros_like(truth["alpha_identity"])
        no_expression = torch.zeros_like(truth["alpha_expression"])
        for name, identity, expression in (("mean_face", no_identity, no_expression),
                                           ("true_identity_no_expression", truth["alpha_identity"], no_expression),
                                           ("true_expression_mean_identity", no_identity, truth["alpha_expression"])):
            errors[name].append(vertex_error_mm(morphable.shape(identity, expression), true_vertices, unit))
        predicted.append(torch.cat([estimate.alpha_identity, estimate.alpha_expression / model.expression_sd], 1))
        true.append(torch.cat([truth["alpha_identity"], truth["alpha_expression"] / model.expression_sd], 1))
        shapes = {"predicted": (estimate.alpha_identity, estimate.alpha_expression),
                  "zero": (torch.zeros_like(truth["alpha_identity"]), torch.zeros_like(truth["alpha_expression"])),
                  "true": (truth["alpha_identity"], truth["alpha_expression"])}
        viewpoints = {"predicted_viewpoint": estimate.viewpoint, "true_viewpoint": truth["viewpoint"]}
        for viewpoint_name, viewpoint in viewpoints.items():
            for shape_name, (identity, expression) in shapes.items():
                vertices = morphable.shape(identity, expression)
                landmarks = project(vertices[:, morphable.landmark_indices], viewpoint, size)[..., :2]
                value = loss.w_landmark * landmark_loss(landmarks, frames.landmarks, size)
                terms.setdefault(f"landmark_term_{shape_name}_shape_at_{viewpoint_name}", []).append(float(value))
        for shape_name in ("predicted", "true"):
            terms.setdefault(f"prior_term_{shape_name}_shape", []).append(
                float(loss.w_regulariser * shape_regulariser(*shapes[shape_name])))
    predicted, true = torch.cat(predicted), torch.cat(true)
    n_identity = morphable.n_identity
    correlation = [np.corrcoef(predicted[:, k].numpy(), true[:, k].numpy())[0, 1] for k in range(predicted.shape[1])]
    return {
        "images": len(predicted),
        "identity_sd_predicted_first_10": rounded(predicted[:, :10].std(0)),
        "identity_sd_true_first_10": rounded(true[:, :10].std(0)),
        "identity_correlation_first_10": rounded(correlation[:10]),
        "identity_correlation_mean_abs": round(float(np.mean(np.abs(correlation[:n_identity]))), 3),
        "expression_sd_predicted": rounded(predicted[:, n_identity:].std(0)),
        "expression_sd_true": rounded(true[:, n_identity:].std(0)),
        "vertex_mm": {name: round(float(torch.cat(values).mean()), 3) for name, values in errors.items()},
        "objective": {name: round(float(np.mean(values)), 4) for name, values in terms.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    parser.add_argument("--data", required=True, help="a synthetic set with ground_truth/")
    parser.add_argument("--clips", type=int, default=48, help="the first N clips of the set")
    args = parser.parse_args()
    model, config, _ = load_model(args.checkpoint)
    print(json.dumps(diagnose(model, args.data, args.clips, config.loss), indent=2))


if __name__ == "__main__":
    main()
