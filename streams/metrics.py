"""Classification metrics over per-video scores (plain numpy; fusion reports use the same functions)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class_prf(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class (0 where undefined, as scikit-learn's zero_division=0)."""
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(0)
    actual = matrix.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Top-1 / top-5 accuracy and macro precision, recall and F1 of class scores ``probs`` (N, C)."""
    labels = np.asarray(labels)
    num_classes = probs.shape[1]
    predictions = probs.argmax(1)
    matrix = confusion_matrix(labels, predictions, num_classes)
    precision, recall, f1 = per_class_prf(matrix)
    present = matrix.sum(1) > 0  # macro averages over the classes that occur
    top5 = np.argsort(-probs, axis=1)[:, :5]
    return {
        "top1": float((predictions == labels).mean()),
        "top5": float((top5 == labels[:, None]).any(1).mean()) if num_classes > 5 else None,
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
    }
