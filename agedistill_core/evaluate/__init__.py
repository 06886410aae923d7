"""Evaluation: metrics, student prediction and the benchmark tables."""
