"""Jobs that consume the preprocessed clips: training-data preparation, training, evaluation."""
