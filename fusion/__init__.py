"""Scores in, predictions and reports out: late fusion of the streams' per-video scores and ablation reports.

Fusion methods are fitted on validation scores only and applied to test scores.
"""
