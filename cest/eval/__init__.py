"""Evaluation metrics: AFLW2000-3D landmark NME (metrics.py), dense NME against the BFM (dense.py) and the
synthetic benchmark's ground-truth metrics for every factor (synthetic_metrics.py)."""
