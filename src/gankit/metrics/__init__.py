"""Evaluation metrics: one module per metric."""
