"""Data pipelines: talking-head videos -> aligned face clips (Parquet). See docs/preprocess.md."""

PIPELINE_VERSION = "0.2.0"  # 0.2: one file per input, PyAV decoding, checked tracking, images
