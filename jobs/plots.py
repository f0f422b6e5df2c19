"""Cumulative error distribution (CED) figures of the evaluation jobs (jobs.eval, jobs.eval_shape)."""

from pathlib import Path

import numpy as np

from cest.eval.metrics import ced_curve


def save_ced(path: Path, curves: dict[str, tuple[np.ndarray, float]], title: str, xlabel: str, ylabel: str,
             upper: float) -> None:
    """One line per model: `curves` maps a label to (finite errors, the headline number shown beside it); the
    x axis runs from 0 to `upper`, each curve's thresholds reaching its own largest error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4))
    for label, (errors, headline) in curves.items():
        thresholds, fraction = ced_curve(errors, max(upper, 1.05 * float(errors.max())) if errors.size else upper)
        axes.plot(thresholds, 100 * fraction, label=f"{label[:24]} ({headline:.2f})")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, upper), ylim=(0, 100))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
