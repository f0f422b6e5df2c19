"""All tunables of the preprocessing pipeline, with their defaults, in one place."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


DETECTORS = ("dlib", "mediapipe", "fan")  # the landmark backends (pipelines.landmarks.make_landmarker)


@dataclass(frozen=True)
class PreprocessConfig:
    # Decode
    frame_stride: int = 1  # keep every K-th source frame
    max_frames: int = 0  # keep at most this many frames per video (0: no limit)
    max_side: int = 512  # working frames: longer side bounded to this many pixels before detection
    min_side: int = 64  # videos whose shorter side is below this are rejected as too small
    decode_timeout_s: float = 120.0  # bound on wall time per decoding pass; decoders can hang on damaged files
    decoder: str = "pyav"  # pyav | decord (see decode.py; pyav measured faster and correct on edit lists)
    decode_batch: int = 8  # frames per message from the decoder process (about 3 x this many are in flight)
    # Working frames a task holds between tracking and cropping, in MiB (0.75 MiB each at 512 x 512,
    # 0.14 MiB at VoxCeleb's 224 x 224): a video whose frames do not fit is decoded a second time for the
    # crops instead, which cost a 1,500-frame 512 px video 45% more time. 512 MiB hold 680 frames at
    # 512 px (27 s at 25 fps) and 3,500 at 224 px (2 min 20 s), so nearly every VoxCeleb clip is decoded once.
    max_buffered_mib: int = 512
    grayscale_tolerance: float = 2.0  # mean |R-G|+|G-B| (8-bit levels) below this means a grayscale video
    # Landmarks
    # The landmark backend (DETECTORS). mediapipe: on the AFLW2000-3D sample it found all 8 faces (dlib's HOG 5),
    # 4.1 / 5.6 / 8.4% NME at 0-30 / 30-60 / 60-90 degrees of yaw (dlib with its CNN fallback: 4.3 / 23.9 /
    # 24.4; on the 4 frontal faces HOG finds, 3.5% against dlib's 3.8) in 6 CPU-ms per image (dlib: 65), offline
    # (docs/preprocess.md, Profiles). dlib stays selectable (its outputs before pipeline 0.4 record it).
    detector: str = "mediapipe"
    device: str = "auto"  # fan only: auto | cpu | cuda
    fan_face_detector: str = "sfd"  # face_alignment's detector module used by the fan backend
    dlib_upsample: int = 1  # HOG pyramid upsampling: 1 finds faces down to ~40 px in the working frame
    # dlib's CNN detector where HOG finds no face. Off: on the AFLW2000 sample it found the 3 faces HOG
    # missed, but the 68-point model put the two past 30 degrees of yaw at 24% and 43% NME (unusable for
    # crops), and each frame HOG misses cost 1.8 CPU-s instead of 0.06 (benchmarks/bench_profile_landmarks.py).
    dlib_cnn_fallback: bool = False
    dlib_cnn_upsample: int = 0  # the fallback's pyramid upsampling on whole frames (1: 3.7x the CPU; local checks: 0)
    tracking: bool = True
    verify_every: int = 2  # tracked frames between local detector runs that confirm and re-anchor the track
    # A tracked frame's landmarks run a second time on a box centred on them when they land more than
    # this fraction of the box size away from its guessed box (0: always). See docs/preprocess.md.
    recentre_tolerance: float = 0.05
    # Frames followed per batch of the landmark model for backends that batch (FAN): the boxes of a
    # window are guessed from its first frame, so longer windows guess worse on a moving head.
    track_window: int = 8
    min_face_size: float = 40.0  # faces whose detector box side is below this (working pixels) are too small
    max_scale_jump: float = 1.25  # frame-to-frame face scale change above this breaks the track
    # Segments
    primary_face_only: bool = True  # drop tracks of other people than the longest track's (dlib face ResNet)
    identity_threshold: float = 0.6  # descriptor distance below which two tracks show the same person
    min_segment_frames: int = 8  # shorter face tracks are dropped; no usable track at all rejects the input
    max_segment_frames: int = 256  # longer tracks are cut so rows stay a few MB
    # Crop
    crop_size: int = 224
    crop_zoom: float = 1.0  # >1 zooms in (tighter crop)
    smooth_sigma: float = 2.0  # Gaussian smoothing of crop transforms over time, in kept frames
    jpeg_quality: int = 92
    # Mask
    mask_backend: str = "skin"  # landmark face region x per-frame skin colour model
    skin_threshold: float = 9.21  # squared Mahalanobis distance in CrCb (chi2, 2 dof, 99%)
    # Within a segment the mask's upper boundary (raised brows) and each crop pixel's skin distance are
    # averaged with this weight on the previous frames (0: each frame on its own). 0.5: on the sample
    # the boundary is then nearest the jitter-free landmark track (0.52 px mean, 0.85 raw, 0.60 at 0.7,
    # which lags a moving head more), and a pixel leaving skin colour drops out in the same frame.
    mask_boundary_memory: float = 0.5
    mask_pixel_memory: float = 0.5
    # Pixels darker than the cheeks and nose by more than this many robust deviations of their luminance
    # are not skin (0: off). 3: on the sample it removes 3.8% of the mask's pixels, on hair at the face's
    # border, glasses frames, brows and nostrils, and some deep eye-socket shadow (2.5: 5.7%, 4: 2.0%).
    mask_dark_tolerance: float = 3.0

    def __post_init__(self):
        checks = {
            "frame_stride must be >= 1": self.frame_stride >= 1,
            "max_frames must be >= 0": self.max_frames >= 0,
            "max_side must be >= 64": self.max_side >= 64,
            "decode_timeout_s must be > 0": self.decode_timeout_s > 0,
            "decode_batch must be >= 1": self.decode_batch >= 1,
            "decoder must be pyav or decord": self.decoder in ("pyav", "decord"),
            "detector must be dlib, mediapipe or fan": self.detector in DETECTORS,
            "dlib_cnn_upsample must be >= 0": self.dlib_cnn_upsample >= 0,
            "recentre_tolerance must be >= 0": self.recentre_tolerance >= 0,
            "track_window must be >= 1": self.track_window >= 1,
            "device must be auto, cpu or cuda[:N]": self.device in ("auto", "cpu") or self.device.startswith("cuda"),
            "min_segment_frames must be >= 1": self.min_segment_frames >= 1,
            "max_segment_frames must be >= min_segment_frames": self.max_segment_frames >= self.min_segment_frames,
            "crop_size must be >= 32": self.crop_size >= 32,
            "jpeg_quality must be in 1..100": 1 <= self.jpeg_quality <= 100,
            "mask_backend must be skin": self.mask_backend in ("skin",),
            "mask memories must be in [0, 1)": 0 <= self.mask_boundary_memory < 1 and 0 <= self.mask_pixel_memory < 1,
            "mask_dark_tolerance must be >= 0": self.mask_dark_tolerance >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def settings_of_older_outputs(cls) -> dict:
        """What an output recorded before a setting existed was made with: the default, except where the
        default changed the output when the setting was added (pipeline 0.2: memoryless chroma-only masks, every
        tracked frame re-centred, one frame per landmark batch)."""
        before = dict(
            mask_boundary_memory=0.0, mask_pixel_memory=0.0, mask_dark_tolerance=0.0, recentre_tolerance=0.0, track_window=1
        )
        return {**cls().output_settings(), **before}

    def output_settings(self) -> dict:
        """Settings that change what is written; a resumed run must match them."""
        settings = dataclasses.asdict(self)
        for runtime_only in ("decode_timeout_s", "device", "max_buffered_mib"):
            settings.pop(runtime_only)
        return settings
