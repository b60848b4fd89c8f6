"""Classification metrics over per-video scores, by scikit-learn's definitions (fusion reports use the same).

Macro averages are scikit-learn's: over the classes that occur in the labels *or* the predictions, each with
``zero_division=0``. A class that is predicted but absent from the labels counts with F1 0 (a hand-written average
over the labels' classes alone used to hide such mistakes).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, top_k_accuracy_score
from sklearn.metrics import confusion_matrix as _sklearn_confusion_matrix


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts over every class of the dataset, rows = true class, columns = predicted class."""
    return _sklearn_confusion_matrix(labels, predictions, labels=np.arange(num_classes))


def per_class_prf(labels: np.ndarray, predictions: np.ndarray, num_classes: int):
    """Precision, recall and F1 of every class of the dataset, each (C,), 0 where undefined."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=np.arange(num_classes), average=None, zero_division=0
    )
    return precision, recall, f1


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Top-1 / top-5 accuracy and macro precision, recall and F1 of class scores ``probs`` (N, C)."""
    labels = np.asarray(labels)
    num_classes = probs.shape[1]
    predictions = probs.argmax(1)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average="macro", zero_division=0)
    top5 = top_k_accuracy_score(labels, probs, k=5, labels=np.arange(num_classes)) if num_classes > 5 else None
    return {
        "top1": float(accuracy_score(labels, predictions)),
        "top5": None if top5 is None else float(top5),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
    }
