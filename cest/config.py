"""Every tunable of the model, the objective, the optimiser and the batch layout, with its default.

The paper (Sec. 4.1, App. B.1) fixes the batch (32 clips x 4 frames), Adam with learning rate 1e-3 and the
kind of each network; its tables lost the layer widths and its text lost the loss weights. The values chosen
here for those are documented next to each field and in docs/model.md.

`Config` groups the five parts (model, loss, optim, data, train); `load_config` / `save_config` read and write it as YAML, where any field left
out keeps its default and an unknown field is an error.
"""

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

VARIANTS = ("cest", "iest")
DISTANCES = ("l21", "l1")
CONSISTENCY_MODES = ("pairing", "clip_average")
CONSISTENCY_SCOPES = ("clip", "video")
PRECISIONS = ("fp32", "bf16", "fp16")
RASTER_BACKENDS = ("auto", "torch", "nvdiffrast")  # cest.render.raster.rasterize
SCHEDULES = ("constant", "cosine")  # cest.step.learning_rate_at


def _multiple_of_64(name: str, value: int) -> None:
    # The U-Net (Table 2) halves the map six times (skips at 1/2..1/32, bottom at 1/64) and adds the skips back.
    if value <= 0 or value % 64:
        raise ValueError(f"{name} must be a positive multiple of 64, got {value}")


@dataclass
class ModelConfig:
    # "cest": conditional chain V -> S -> R -> L; "iest": the four estimates each from the image alone.
    variant: str = "cest"
    # Square input images, any size from 32 (the encoders pool globally): 224 for training, 112 or 64 for
    # tests and CPU demos.
    image_size: int = 224
    # UV maps (illuminated texture and reflectance). 128 at 224 input: a frontal face spans about 120-150
    # pixels of a 224 crop, so 128 texels across the (mirror-symmetric) UV layout keep roughly the image's
    # detail without upsampling noise, at a third of the cost of a 224 UV U-Net. Must be a multiple of 64.
    uv_size: int = 128
    # Channels of the six stride-2 stages of the viewpoint, shape and illumination encoders (App. B.1 Table 1).
    encoder_widths: tuple[int, ...] = (32, 64, 128, 256, 256, 256)
    # Channels of the five U-Net encoder levels of the reflectance network at 1/2 .. 1/32 of the UV size, each
    # added to the decoder as a skip; the bottom (1/64) repeats the last width (App. B.1 Table 2).
    unet_widths: tuple[int, ...] = (32, 64, 128, 256, 256)
    # Viewpoint parameterisation: scale = init_scale * exp(out_0), rotation vector = out_1:4 (radians),
    # translation = out_4:7 (NDC); also the canonical crop's scale. 0.6 is the pipeline's framing: the SFM
    # mean face fitted to the landmarks of its 224 crops of the sample clips has scale 0.61 (median; 10-90%
    # 0.59-0.63), measured with cest.fitting.fit_viewpoint on the inner 51 landmarks.
    init_scale: float = 0.6
    # Standard deviation of the last layer's initial weights in the regression heads: small, so training
    # starts from the mean face, frontal view, ambient light, while every layer already gets gradients.
    head_init_std: float = 1e-3
    # Rasterizer of the renderer (cest/render/raster.py): "auto" = nvdiffrast's CUDA rasterizer when the tensors are
    # on a GPU and nvdiffrast is installed, else the pure-PyTorch one; "torch" or "nvdiffrast" to force one.
    # Only which triangle covers a pixel differs; barycentrics and gradients are computed alike.
    raster_backend: str = "auto"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        _multiple_of_64("uv_size", self.uv_size)
        if self.raster_backend not in RASTER_BACKENDS:
            raise ValueError(f"raster_backend must be one of {RASTER_BACKENDS}, got {self.raster_backend!r}")
        self.encoder_widths = tuple(int(w) for w in self.encoder_widths)
        self.unet_widths = tuple(int(w) for w in self.unet_widths)
        if len(self.unet_widths) != 5:
            raise ValueError(f"unet_widths needs 5 levels (skips at 1/2 .. 1/32), got {self.unet_widths}")
        if len(self.encoder_widths) < 1:
            raise ValueError("encoder_widths needs at least one stage")


@dataclass
class LossConfig:
    # Photometric distance per pixel: "l1" = mean absolute difference over RGB (the paper's metric); "l21" =
    # Euclidean norm of the RGB difference (robust like L1, independent of the colour axes). Both grow linearly
    # with the error, so occluders and mask errors do not dominate. l1 by the synthetic sweep (issue 10 fix 7,
    # docs/model.md): at w_landmark 10 it gave the lower 3D shape error (5.45 vs 6.96 mm) and reflectance error
    # (0.0766 vs 0.0783) than l21 (one seed, 60 CPU steps: weak evidence).
    distance: str = "l1"
    # Eq. 7-8 extra reconstruction terms; off/off is the degenerate ablation of Fig. 4(e).
    symmetry: bool = True
    consistency: bool = True
    # "pairing": frame i also re-rendered with the reflectance of a random other frame of its clip (the paper's
    # stochastic strategy); "clip_average": the mean reflectance of its clip replaces frame i's own in the
    # reconstruction, no extra term (FML-style, App. B.2).
    consistency_mode: str = "pairing"
    # Landmark term: mean Euclidean distance between projected model landmarks and detected ones, divided
    # by the image size. At 1.0 its gradient on the viewpoint is 3-60x below the photometric one at
    # initialisation and the synthetic sweep (issue 10 fix 7) learnt no pose in its budget (pose error 49.9
    # degrees, the frontal guess's 50.3); 10 lowered pose error to 44 degrees and landmark NME 0.196 -> 0.163,
    # reflectance error 0.085 -> 0.078; 30 was worse again on shape (8.2 mm) and pose (46 degrees).
    w_landmark: float = 10.0
    # Energy regulariser: mean squared shape coefficient (identity and expression, both in units of the
    # prior's standard deviations: cest.model.expression_standard_deviations), so a typical face has energy ~1.
    # 0.1: at 1e-3 (chosen by a 60-step sweep, before anything was learnt) the shape coefficients absorbed the
    # landmark residual of a wrong pose (energy 1-2 sd^2, 8 mm shapes, 17 mm past 60 degrees of yaw); 0.01
    # learnt worse shape than 0.1 at 2,000 and 4,000 steps (docs/model.md, issue 18). Both terms are in units
    # that do not depend on the image size (landmarks / image size, coefficients in sd), so this holds at 224 px.
    w_regulariser: float = 0.1
    # Steps at the start of training that fit the landmarks alone (landmark and regulariser terms, no rendering:
    # several times cheaper a step). The viewpoint and shape networks learn the geometry first; the photometric
    # terms, whose gradients mislead while the pose is wrong (a wrong pose unwraps the wrong texels), join after.
    landmark_warmup_steps: int = 0
    # Retinex prior on the reflectance (cest.losses.reflectance_smoothness; not in the paper). 0: off, the
    # paper's objective. The symmetry and consistency terms cannot see shading that is the same on both
    # halves of the face and in every frame of a clip (light from above), and CEST's reflectance, estimated
    # from the illuminated texture, keeps it (docs/model.md: shading ratio 0.66, reflectance error 1.8x a
    # flat map's).
    w_reflectance_smoothness: float = 0.0
    # Texture change (mean over RGB, [0, 1] units, between neighbouring texels) at which a reflectance edge
    # costs 1/e as much: a directional light changes a 64 px face's texture by about 0.02 a texel, the edge of
    # a brow or a lip by 0.1-0.3.
    smoothness_edge: float = 0.05

    def __post_init__(self):
        if self.smoothness_edge <= 0:
            raise ValueError(f"smoothness_edge must be > 0, got {self.smoothness_edge}")
        if self.landmark_warmup_steps < 0:
            raise ValueError(f"landmark_warmup_steps must be >= 0, got {self.landmark_warmup_steps}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.consistency_mode not in CONSISTENCY_MODES:
            raise ValueError(f"consistency_mode must be one of {CONSISTENCY_MODES}, got {self.consistency_mode!r}")
        if self.w_landmark < 0 or self.w_regulariser < 0 or self.w_reflectance_smoothness < 0:
            raise ValueError("loss weights must be non-negative")


@dataclass
class OptimConfig:
    learning_rate: float = 1e-3  # Adam, as in the paper (Sec. 4.1)
    # "constant" (the paper's) or "cosine": from learning_rate down to learning_rate * final_fraction at the
    # last step (train.steps), computed from the step alone so that a resumed run continues the same curve.
    # Constant stays the default for the paper's 50K-step runs; the CPU recipe decays (docs/model.md, issue 18:
    # against constant on its own the schedule was measured with one seed only, and is not yet a finding).
    schedule: str = "constant"
    final_fraction: float = 0.01
    # With a landmark warm-up the reflectance and light networks start training only when it ends; under one
    # schedule over the whole run they would start at an already decayed rate (2.5e-4 of 1e-3 after 8,000 of
    # 12,000 cosine steps). True starts their schedule at the end of the warm-up (cest.step.learning_rates).
    # Measured (docs/model.md, one seed): a better photometric fit, no better reflectance, flatter shading; off.
    restart_after_warmup: bool = False

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.final_fraction <= 1:
            raise ValueError(f"final_fraction must be in [0, 1], got {self.final_fraction}")


@dataclass
class DataConfig:
    clips_per_batch: int = 32  # 32 clips x 4 frames = 128 images per batch (Sec. 4.1)
    # Frames drawn at random from each clip, anew every epoch. 1 is the single-image setting (300W-LP):
    # each row is its own clip and the consistency term has no partner, so it must be off.
    frames_per_clip: int = 4
    # What the consistency term pairs across: "clip" = the frames of one clip segment (default, Sec. 4.1);
    # "video" = frames drawn across all segments and clips of one source video (the Fig. 11 ablation).
    consistency_scope: str = "clip"
    # Clips held in the local shuffle buffer of each training worker (on top of the file order, which is
    # shuffled every epoch): decorrelates neighbouring clips of a file without an all-to-all shuffle.
    shuffle_buffer_clips: int = 256
    # Share of the samples (clip rows) that may be skipped because their file or row cannot be read or decoded
    # before a job stops with an error (jobs/data_errors.py). At corpus scale a few bad files or rows are certain
    # (partial copies, interrupted writes) and must not stop a day of training; 1% is far above that and still
    # low enough that a systematically broken corpus (a wrong directory, a schema change) stops the job at once.
    max_skipped_fraction: float = 0.01
    # Share of the clips mirrored left-right at each step, all frames of a clip alike (cest/augment.py). Not in the
    # paper, so 0 by default; real clips that turn mostly one way teach the model that way for every profile.
    mirror_probability: float = 0.0

    def __post_init__(self):
        if self.clips_per_batch < 1:
            raise ValueError(f"clips_per_batch must be >= 1, got {self.clips_per_batch}")
        if self.frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be >= 1, got {self.frames_per_clip}")
        if self.consistency_scope not in CONSISTENCY_SCOPES:
            raise ValueError(f"consistency_scope must be one of {CONSISTENCY_SCOPES}, got {self.consistency_scope!r}")
        if self.shuffle_buffer_clips < 0:
            raise ValueError(f"shuffle_buffer_clips must be >= 0, got {self.shuffle_buffer_clips}")
        if not 0 <= self.max_skipped_fraction <= 1:
            raise ValueError(f"max_skipped_fraction must be in [0, 1], got {self.max_skipped_fraction}")
        if not 0 <= self.mirror_probability <= 1:
            raise ValueError(f"mirror_probability must be in [0, 1], got {self.mirror_probability}")

    @property
    def batch_size(self) -> int:
        return self.clips_per_batch * self.frames_per_clip


@dataclass
class TrainConfig:
    # Iterations: 50K for the video setting, 20K for single images (Sec. 4.1).
    steps: int = 50_000
    # "bf16" autocast on GPUs that have it (no loss scaling needed), "fp16" with a gradient scaler, "fp32".
    precision: str = "fp32"
    # The landmark warm-up's steps (loss.landmark_warmup_steps) in another precision; None: `precision`. Those
    # steps train only the viewpoint and shape networks, which bf16 trains alike (docs/model.md, "bf16 at half
    # widths"), while a bf16 full objective raised the reflectance error by 5 %.
    warmup_precision: str | None = None
    checkpoint_every: int = 1000  # steps between checkpoints (and what a restarted worker group loses at most)
    log_every: int = 50  # steps between progress lines and logged metrics
    # Steps between image grids and degeneracy measures on the held-apart frames (each costs a forward pass).
    image_every: int = 1000
    holdout_clips: int = 4  # clips held apart from training for the image grids, one frame each
    seed: int = 0

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.warmup_precision not in (None, *PRECISIONS):
            raise ValueError(f"warmup_precision must be null or one of {PRECISIONS}, got {self.warmup_precision!r}")
        for name in ("steps", "checkpoint_every", "log_every", "image_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.holdout_clips < 0:
            raise ValueError(f"holdout_clips must be >= 0, got {self.holdout_clips}")

    def step_precision(self, warming_up: bool) -> str:
        """The precision of a step: `warmup_precision` in the landmark warm-up where it is set, else `precision`."""
        return self.warmup_precision if warming_up and self.warmup_precision else self.precision

    @property
    def precisions(self) -> set[str]:
        """Every precision some step of the run uses."""
        return {self.precision, self.warmup_precision or self.precision}

    @property
    def scaler_precision(self) -> str:
        """The precision the gradient scaler is made for: fp16 if any step runs in it (cest.step.make_scaler)."""
        return "fp16" if "fp16" in self.precisions else self.precision


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.loss.consistency and self.data.frames_per_clip < 2:
            raise ValueError("loss.consistency needs data.frames_per_clip >= 2 (a frame needs a partner in its "
                             "clip); set loss.consistency=false for single images")


def _from_dict(cls, values: dict):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        kwargs[name] = _from_dict(type(default), value) if is_dataclass(default) else value
    return cls(**kwargs)


def config_from_dict(values: dict) -> Config:
    return _from_dict(Config, values)


def config_to_dict(config: Config) -> dict:
    values = asdict(config)
    values["model"]["encoder_widths"] = list(config.model.encoder_widths)
    values["model"]["unet_widths"] = list(config.model.unet_widths)
    return values


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """The defaults, updated by the YAML file at `path` (if any), then by "section.field=value" overrides."""
    values = {}
    if path is not None:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of sections")
    for assignment in overrides:
        apply_override(values, assignment)
    return config_from_dict(values)


def apply_override(values: dict, assignment: str) -> None:
    """Set "section.field=value" in a config dict; the value is read as YAML (true, 0.5, [1, 2], cest)."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ValueError(f"override {assignment!r}: expected section.field=value, e.g. loss.symmetry=false")
    section, name = parts
    if section not in {f.name for f in fields(Config)}:
        raise ValueError(f"override {assignment!r}: unknown section {section!r}")
    values.setdefault(section, {})
    if not isinstance(values[section], dict):
        raise ValueError(f"override {assignment!r}: section {section!r} is not a mapping")
    values[section][name] = yaml.safe_load(text)


def save_config(config: Config, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config_to_dict(config), f, sort_keys=False)
