"""Late-fusion estimators in scikit-learn's shape: ``fit(fitting_probs_by_stream, fitting_labels)`` on the fitting
scores (validation, or out-of-fold scores with ``bin/fuse --fit-on oof``), ``predict_proba`` / ``predict`` on test
scores. ``probs_by_stream`` maps a stream name to (N, C) softmax scores.

Only ``fit`` sees labels, and it is never called on test data: no parameter is fitted on test.
Every method can first calibrate each stream with a temperature fitted on the fitting scores (``calibrate=True``).
Fitted parameters serialise to JSON (``to_json`` / ``from_json``) so a fitted fusion can classify new videos.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss as sklearn_log_loss

EPS = 1e-12


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, EPS, 1.0))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's log-loss over every class of the scores (validation may lack some classes)."""
    return float(sklearn_log_loss(labels, probs, labels=np.arange(probs.shape[1])))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising validation log-loss of softmax(log p / T), searched over log T in [-3, 3]."""
    logits = _log(probs)

    def loss(log_t):
        return log_loss(softmax(logits / np.exp(log_t), axis=1), labels)

    result = minimize_scalar(loss, bounds=(-3, 3), method="bounded")
    return float(np.exp(result.x))


class FusionFileError(ValueError):
    """A fusion file field that does not mean what it must: ``"<field>: <problem>"``."""


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


class FusionMethod:
    name = "base"

    def __init__(self, *, calibrate: bool = False):
        self.calibrate = calibrate
        self.streams_: list[str] | None = None
        self.temperatures_: dict[str, float] = {}

    # --- shared plumbing ---------------------------------------------------------------------------------------
    def _stack(self, probs_by_stream: dict[str, np.ndarray]) -> np.ndarray:
        """(S, N, C) in the fitted stream order, temperature-scaled when calibrated."""
        if self.streams_ is None:
            raise RuntimeError(f"{self.name} fusion is not fitted")
        if set(probs_by_stream) != set(self.streams_):
            raise ValueError(f"fusion was fitted on streams {self.streams_}, given {sorted(probs_by_stream)}")
        out = []
        for s in self.streams_:
            p = np.asarray(probs_by_stream[s], dtype=np.float64)
            if self.calibrate:
                p = softmax(_log(p) / self.temperatures_[s], axis=1)
            out.append(p)
        return np.stack(out)

    def fit(self, fitting_probs_by_stream: dict[str, np.ndarray], fitting_labels: np.ndarray) -> FusionMethod:
        self.streams_ = sorted(fitting_probs_by_stream)
        labels = np.asarray(fitting_labels)
        if self.calibrate:
            self.temperatures_ = {
                s: fit_temperature(np.asarray(fitting_probs_by_stream[s], float), labels) for s in self.streams_
            }
        self._fit(self._stack(fitting_probs_by_stream), labels)
        return self

    def _fit(self, stacked: np.ndarray, labels: np.ndarray) -> None:
        pass

    def predict_proba(self, probs_by_stream: dict[str, np.ndarray]) -> np.ndarray:
        fused = self._combine(self._stack(probs_by_stream))
        return fused / fused.sum(1, keepdims=True)

    def predict(self, probs_by_stream: dict[str, np.ndarray]) -> np.ndarray:
        return self.predict_proba(probs_by_stream).argmax(1)

    def params(self) -> dict:
        """Fitted parameters a person can read (weights, temperatures)."""
        out = {}
        if self.calibrate:
            out["temperatures"] = {s: round(t, 4) for s, t in self.temperatures_.items()}
        return out

    def to_json(self) -> dict:
        return {
            "method": self.name,
            "calibrate": self.calibrate,
            "streams": self.streams_,
            "temperatures": self.temperatures_,
            **self._state(),
        }

    def _state(self) -> dict:
        return {}

    def _load_state(self, state: dict) -> None:
        pass

    @staticmethod
    def from_json(data: dict) -> FusionMethod:
        """A fitted method from its JSON, every field checked against its meaning: a ``FusionFileError`` names the
        field and what is wrong (a hand-edited fusion file is input too)."""
        if data.get("method") not in METHODS:
            raise FusionFileError(f"method: {data.get('method')!r} is not one of {', '.join(METHODS)}")
        if not isinstance(data.get("calibrate"), bool):
            raise FusionFileError(f"calibrate: {data.get('calibrate')!r} is not true or false")
        streams = data.get("streams")
        if not isinstance(streams, list) or not streams or not all(isinstance(s, str) for s in streams):
            raise FusionFileError(f"streams: {streams!r} is not a list of stream names")
        method = METHODS[data["method"]](calibrate=data["calibrate"])
        method.streams_ = list(streams)
        temperatures = data.get("temperatures") or {}
        if method.calibrate:
            if set(temperatures) != set(streams):
                raise FusionFileError(f"temperatures: one per stream ({', '.join(streams)}) with calibrate true")
            for stream, t in temperatures.items():
                if not _finite(t) or t <= 0:
                    raise FusionFileError(f"temperatures.{stream}: {t!r} is not a positive number")
        method.temperatures_ = {k: float(v) for k, v in temperatures.items()}
        try:
            method._load_state(data)
        except FusionFileError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise FusionFileError(f"{type(err).__name__}: {err}") from None
        return method


class MeanFusion(FusionMethod):
    """Arithmetic mean of the streams' probabilities."""

    name = "mean"

    def _combine(self, stacked):
        return stacked.mean(0)


class ProductFusion(FusionMethod):
    """Geometric mean (product rule): exp of the mean log-probability, renormalised."""

    name = "product"

    def _combine(self, stacked):
        return np.exp(_log(stacked).mean(0))


class MaxFusion(FusionMethod):
    """Per class, the most confident stream's probability, renormalised."""

    name = "max"

    def _combine(self, stacked):
        return stacked.max(0)


def simplex_grid(streams: int, n: int) -> np.ndarray:
    """(M, streams) every weight vector of multiples of 1/n summing to 1, in the order of ``itertools.product`` over
    the first streams - 1 weights (the last one takes the rest)."""
    firsts = np.indices((n + 1,) * (streams - 1)).reshape(streams - 1, -1).T
    firsts = firsts[firsts.sum(1) <= n]
    return np.concatenate([firsts, n - firsts.sum(1, keepdims=True)], 1) / n


def best_grid_weights(stacked: np.ndarray, labels: np.ndarray, n: int, *, chunk_bytes: int = 8 << 20) -> np.ndarray:
    """The grid weights of highest accuracy on (S, N, C) scores; among those the lowest log-loss (scikit-learn's:
    probabilities clipped to [eps, 1 - eps]; losses within 1e-12 of the lowest tie), then the nearest to equal
    weights, then the first in grid order.

    Fast because fused scores are linear in the weights: a video is right under weights w when, for every other
    class c, w · (p[label] - p[c]) > 0 (>= 0 for a class after the label: argmax keeps the first maximum). Where every
    stream puts the label above c by a clear margin so does every weight vector (they are convex combinations), and
    where every stream puts some c clearly above the label none does; only the (video, class) pairs left open are
    scored, one matrix product per block of weight vectors, and a vector with an open margin within rounding of zero
    is counted again from its fused scores, as argmax does. The log-loss needs only each stream's label score and
    row sum (M x N x S)."""
    s, videos, classes = stacked.shape
    grid = simplex_grid(s, n)
    right_scores = stacked[:, np.arange(videos), labels]  # (S, N)
    margins = right_scores[:, :, None] - stacked  # (S, N, C): > 0 where a stream puts the label above class c
    clear = 1e-9
    never = (margins.max(0) < -clear).any(1)
    settled = (margins.min(0) > clear) | (np.arange(classes) == labels[:, None])
    always = settled.all(1)
    correct = np.full(len(grid), int(always.sum()))
    open_videos = np.flatnonzero(~(always | never))
    threats = ~settled[open_videos]  # (V, C): the classes that can beat the label under some weights
    # videos grouped by how many threats they have, so that each group is a dense (S, videos x threats) matrix
    groups, per_video = [], threats.sum(1)
    for width in np.unique(per_video):
        members = np.flatnonzero(per_video == width)
        c = np.nonzero(threats[members])[1].reshape(len(members), width).T  # (width, members): k-th threat of each
        flat = margins[:, open_videos[members][None, :], c].reshape(s, -1)  # columns: threat slot, then video
        groups.append((len(members), width, flat.astype(np.float32)))
    # float32 halves the memory traffic; a vector with a margin within float32 rounding of zero is counted again
    # exactly from its fused scores (float64, argmax keeps the first maximum, as the fused scores' argmax does)
    grid32 = grid.astype(np.float32)
    rows = max(1, chunk_bytes // (4 * max(1, int(threats.sum()))))
    for start in range(0, len(grid), rows):
        block = grid32[start : start + rows]
        unsure = np.zeros(len(block), bool)
        for members, width, flat in groups:
            lowest = (block @ flat).reshape(len(block), width, members).min(1)  # each video's closest threat
            unsure |= (np.abs(lowest) <= 1e-6).any(1)
            correct[start : start + rows] += (lowest > 0).sum(1)
        for r in np.flatnonzero(unsure):
            fused = np.tensordot(grid[start + r], stacked[:, open_videos], 1)
            correct[start + r] = int(always.sum()) + int((fused.argmax(1) == labels[open_videos]).sum())
    tied = np.flatnonzero(correct == correct.max())
    eps = np.finfo(np.float64).eps
    right = (grid[tied] @ right_scores) / (grid[tied] @ stacked.sum(2))
    loss = -np.log(np.clip(right, eps, 1 - eps)).mean(1)
    near = loss <= loss.min() + 1e-12 * max(1.0, abs(loss.min()))
    tied = tied[near]
    distance = np.abs(grid[tied] - 1 / s).sum(1)
    return grid[tied[np.lexsort((np.arange(len(tied)), distance))[0]]]  # nearest equal weights, then grid order


class WeightedMeanFusion(FusionMethod):
    """Weighted mean with weights on the simplex fitted on validation: ``search="grid"`` maximises validation
    accuracy over a grid of step ``step`` (ties: lower log-loss, then nearer equal weights); ``search="logloss"``
    minimises validation log-loss."""

    name = "weighted"

    def __init__(self, *, calibrate: bool = False, search: str = "grid", step: float = 0.05):
        super().__init__(calibrate=calibrate)
        if search not in ("grid", "logloss"):
            raise ValueError(f"search must be grid or logloss, not {search!r}")
        self.search, self.step = search, step
        self.weights_: np.ndarray | None = None

    def _fit(self, stacked, labels):
        s = stacked.shape[0]
        if self.search == "logloss":

            def loss(z):
                w = softmax(z)
                return log_loss(np.tensordot(w, stacked, 1), labels)

            result = minimize(loss, np.zeros(s), method="L-BFGS-B")
            self.weights_ = softmax(result.x)
            return
        self.weights_ = best_grid_weights(stacked, labels, int(round(1 / self.step)))

    def _combine(self, stacked):
        return np.tensordot(self.weights_, stacked, 1)

    def params(self):
        return {**super().params(), "weights": {st: round(float(w), 4) for st, w in zip(self.streams_, self.weights_)}}

    def _state(self):
        return {"search": self.search, "step": self.step, "weights": self.weights_.tolist()}

    def _load_state(self, state):
        self.search, self.step = state["search"], state["step"]
        weights = state["weights"]
        if not isinstance(weights, list) or len(weights) != len(self.streams_):
            raise FusionFileError(f"weights: {weights!r} is not one weight per stream ({', '.join(self.streams_)})")
        if not all(_finite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise FusionFileError(f"weights: {weights!r} must be finite, not negative, and not all zero")
        self.weights_ = np.asarray(weights, float)


class StackingFusion(FusionMethod):
    """scikit-learn's ``LogisticRegression`` on the concatenated log-probabilities of all streams (L2, strength
    ``1 / C``, L-BFGS from zero: deterministic); multinomial for more than two classes. Castro-era work used an SVM
    on softmax scores."""

    name = "stacking"

    def __init__(self, *, calibrate: bool = False, C: float = 1.0):
        super().__init__(calibrate=calibrate)
        self.C = C
        self.model_: LogisticRegression | None = None
        self.num_classes_: int | None = None

    @staticmethod
    def _features(stacked):
        return np.concatenate(list(_log(stacked)), axis=1)  # (N, S*C)

    def _fit(self, stacked, labels):
        if len(np.unique(labels)) < 2:
            raise ValueError("stacking fusion needs validation videos of at least two classes")
        self.num_classes_ = stacked.shape[2]
        self.model_ = LogisticRegression(C=self.C, max_iter=1000).fit(self._features(stacked), labels)

    def _combine(self, stacked):
        # Classes that validation never shows get no column from the regression: probability 0.
        out = np.zeros((stacked.shape[1], self.num_classes_))
        out[:, self.model_.classes_] = self.model_.predict_proba(self._features(stacked))
        return out

    def _state(self):
        m = self.model_
        return {
            "C": self.C,
            "num_classes": self.num_classes_,
            # the label indices the regression saw (its own columns), not the class names: those are the fusion
            # file's "classes", which every method carries
            "label_indices": m.classes_.tolist(),
            "coef": m.coef_.tolist(),
            "intercept": m.intercept_.tolist(),
        }

    def _load_state(self, state):
        self.C, self.num_classes_ = state["C"], state["num_classes"]
        coef, intercept = np.asarray(state["coef"], float), np.asarray(state["intercept"], float)
        if not np.isfinite(coef).all() or not np.isfinite(intercept).all():
            raise FusionFileError("coef, intercept: not finite numbers")
        # checked here, when the file is read, not when the first videos have been preprocessed
        labels = np.asarray(state.get("label_indices", state.get("classes")))
        if not isinstance(self.num_classes_, int) or self.num_classes_ < 2:
            raise FusionFileError(f"num_classes: {self.num_classes_!r} is not a number of classes")
        features = len(self.streams_) * self.num_classes_
        rows = 1 if len(labels) == 2 else len(labels)
        if coef.shape != (rows, features):
            raise FusionFileError(
                f"coef: shape {coef.shape}, not ({rows}, {features}) ({len(labels)} labels; {len(self.streams_)} "
                f"streams × {self.num_classes_} classes)"
            )
        if intercept.shape != (rows,):
            raise FusionFileError(f"intercept: shape {intercept.shape}, not ({rows},)")
        # A fitted regression rebuilt from its parameters: scikit-learn's own predict_proba then applies them.
        self.model_ = LogisticRegression(C=self.C)
        # (a file of an earlier release kept them under "classes", which the class names then overwrote)
        self.model_.classes_ = np.asarray(state.get("label_indices", state.get("classes")))
        self.model_.coef_ = np.asarray(state["coef"], float)
        self.model_.intercept_ = np.asarray(state["intercept"], float)
        self.model_.n_features_in_ = self.model_.coef_.shape[1]


METHODS = {m.name: m for m in (MeanFusion, WeightedMeanFusion, ProductFusion, MaxFusion, StackingFusion)}


def create_method(name: str, **options) -> FusionMethod:
    if name not in METHODS:
        raise ValueError(f"unknown fusion method {name!r}: {', '.join(METHODS)}")
    return METHODS[name](**options)
