"""What rank 0 shows and records while training: progress lines and MLflow metrics, image grids, system metrics.

Every `train.log_every` steps: a progress line (step/total, images/s, share of time waiting for data, peak GPU
memory when on a GPU, samples skipped as unreadable so far when any, ETA, the loss terms averaged over the
window) and the same numbers as MLflow metrics by step in the section train/ (jobs/tracking.py names the
sections): the loss terms, learning_rate and learning_rate_appearance, images_per_second, data_wait_share,
skipped_samples (always: cumulative, the job's skip list's count, jobs/data_errors.py), gpu_peak_memory_gib.
Every `train.image_every` steps (and at the last step): the held-apart frames through the model in eval mode,
as an image grid (input | overlay | reflectance | illuminated texture | shading | normals, cest.visualize)
logged with key "holdout" and the step, so the MLflow UI's slider shows training progress, plus the
degeneracy measures (health/shading_std, health/texture_correlation; cest.losses.degeneracy_measures), and,
when the job names a held-apart synthetic set (--synthetic-test), its ground-truth metrics (jobs.synthetic_eval)
as synthetic/<metric> and one line, so that the curves show whether learning has levelled off.
"""

import time
from collections import defaultdict

import mlflow
import torch

from cest.config import Config
from cest.losses import degeneracy_measures
from cest.step import unwrap_model
from cest.visualize import TRAINING_PANELS, face_panels, panel_grid
from jobs.data import SkipReporter, read_frames, to_batch
from jobs.tracking import HEALTH, HOLDOUT_IMAGE_KEY, SYNTHETIC, TRAIN

# psutil samples (CPU, memory, GPU when present) every this many seconds while the run is open.
SYSTEM_METRICS_SECONDS = 10


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Monitor:
    def __init__(self, job, config: Config, world_size: int):
        self.config, self.total = config, config.train.steps
        self.images_per_step = config.data.batch_size  # clips_per_batch is global: split over the workers
        self.window = defaultdict(float)
        self.window_counts = defaultdict(int)  # per term: the landmark warm-up's steps have fewer terms
        self.window_steps, self.window_seconds, self.window_data_seconds = 0, 0.0, 0.0
        self.skipped_samples = 0
        self.last = time.perf_counter()
        mlflow.set_tracking_uri(job.tracking_uri)
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_SECONDS)
        mlflow.start_run(run_id=job.mlflow_run_id, log_system_metrics=True)
        self.holdout = None
        frames = read_frames(job.data[0][0], job.holdout, config.model.image_size,  # the first source's
                             SkipReporter(job.skip_registry))
        if frames is not None:
            self.holdout = to_batch({name: value[:, None] for name, value in frames.items()})
        self.synthetic_test = job.synthetic_test
        print(f"rank 0: {world_size} worker(s), {self.images_per_step} images per step, "
              f"{len(job.holdout)} held-apart clips for image grids", flush=True)

    def step_done(self, step: int, terms: dict, data_seconds: float, model, skipped_samples: int = 0) -> None:
        """One training step done; `skipped_samples`: the job's count of unreadable samples so far."""
        self.skipped_samples = skipped_samples
        now = time.perf_counter()
        self.window_seconds += now - self.last
        self.window_data_seconds += data_seconds
        self.last = now
        self.window_steps += 1
        for name, value in terms.items():
            self.window[name] += value
            self.window_counts[name] += 1
        schedule = self.config.train
        if step % schedule.log_every == 0 or step == self.total:
            self._log_window(step)
        if step % schedule.image_every == 0 or step == self.total:
            self._log_holdout(step, model)

    def _log_window(self, step: int) -> None:
        steps, seconds = self.window_steps, max(self.window_seconds, 1e-9)
        terms = {name: value / self.window_counts[name] for name, value in self.window.items()}
        metrics = dict(terms)
        metrics["images_per_second"] = steps * self.images_per_step / seconds
        metrics["data_wait_share"] = self.window_data_seconds / seconds
        metrics["skipped_samples"] = self.skipped_samples
        extra = f" | skipped {self.skipped_samples} unreadable samples" if self.skipped_samples else ""
        if torch.cuda.is_initialized():  # this rank trains on a GPU: the most its tensors have held so far
            metrics["gpu_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            extra = f" | peak GPU memory {metrics['gpu_peak_memory_gib']:.1f} GiB" + extra
        eta = (self.total - step) * seconds / steps
        print(f"step {step}/{self.total} | {metrics['images_per_second']:.1f} img/s | data wait "
              f"{100 * metrics['data_wait_share']:.0f}%{extra} | ETA {_duration(eta)} | "
              + " ".join(f"{name} {value:.4g}" for name, value in terms.items()), flush=True)
        mlflow.log_metrics({TRAIN + name: value for name, value in metrics.items()}, step=step)
        self.window.clear()
        self.window_counts.clear()
        self.window_steps, self.window_seconds, self.window_data_seconds = 0, 0.0, 0.0

    @torch.no_grad()
    def _log_holdout(self, step: int, model) -> None:
        if self.holdout is None:
            return
        started = time.perf_counter()
        network = unwrap_model(model)
        device = next(network.parameters()).device
        batch = self.holdout.to(device)
        network.eval()
        estimate = network(batch.images)
        measures = degeneracy_measures(network, estimate, batch.masks)
        grid = panel_grid(face_panels(network, batch.images, estimate, TRAINING_PANELS))
        network.train()
        mlflow.log_metrics({HEALTH + name: value for name, value in measures.items()}, step=step)
        mlflow.log_image(grid, key=HOLDOUT_IMAGE_KEY, step=step)
        if self.synthetic_test is not None:
            self._log_synthetic(step, network)
        # Time spent here is not training time: keep it out of the next window's images/s.
        self.last += time.perf_counter() - started

    def _log_synthetic(self, step: int, network) -> None:
        from jobs.synthetic_eval import METRICS, evaluate

        report = evaluate(network, self.synthetic_test)
        network.train()
        means = {name: report["metrics"][name]["mean"] for name in METRICS}
        mlflow.log_metrics({SYNTHETIC + name: value for name, value in means.items()}, step=step)
        print(f"step {step} held-apart synthetic ({report['images']} images): " +
              ", ".join(f"{name} {value:.4g}" for name, value in means.items()), flush=True)

    def close(self) -> None:
        mlflow.end_run()
