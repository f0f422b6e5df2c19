"""Data pipelines: talking-head videos -> aligned face clips (Parquet). See docs/preprocess.md."""

PIPELINE_VERSION = "0.1.0"
