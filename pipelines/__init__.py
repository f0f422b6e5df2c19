"""Data pipelines: talking-head videos -> aligned face clips (Parquet). See docs/preprocess.md."""

PIPELINE_VERSION = "0.4.0"  # 0.2: one file per input, PyAV decoding, checked tracking, images; 0.3: steadier
# masks, re-centring only where needed, FAN windows, the header frame count recorded; 0.3.1: videos turned
# upright by their display rotation, non-square pixels stretched; 0.4: the mediapipe landmark backend by default
