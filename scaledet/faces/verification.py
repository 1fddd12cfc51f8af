"""Face verification: the LFW protocol (10-fold accuracy), ROC, TAR at a fixed FAR, and the
LFW ``pairs.txt`` reader.

Verification asks "are these two faces the same person?": a pair is scored (here by the cosine
similarity of the two embeddings) and called "same" when the score reaches a threshold. The
threshold must be chosen without the pairs it is measured on, hence the LFW protocol: the pairs
(in file order) form 10 consecutive folds; each fold is scored with the threshold that is best on
the other nine. Accuracy at a chosen threshold hides the trade-off, so the ROC (true accept rate
against false accept rate over every threshold) and the true accept rate at a low false accept
rate (1e-3, 1e-4: the operating points of access control) are reported too. A FAR below
``1 / (number of different-person pairs)`` cannot be resolved: there it means "no false accept
at all" (``TarAtFar.resolved`` says so).

Numpy only (no scikit-learn at run time); ``roc_curve`` follows
``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FaceVerification", "Pair", "PairsFile", "TarAtFar", "VerificationResult",
           "cosine_scores", "read_pairs", "roc_curve", "tar_at_far", "verification_accuracy",
           "verification_report"]


@dataclass(frozen=True)
class VerificationResult:
    """The LFW protocol's numbers.

    Attributes:
        accuracy: mean of the per-fold accuracies, in [0, 1].
        std: their standard deviation (population, ``ddof=0``).
        thresholds: ``(folds,)`` score threshold chosen for each fold (on the other folds).
        fold_accuracies: ``(folds,)`` accuracy of each held-out fold.
    """

    accuracy: float
    std: float
    thresholds: np.ndarray
    fold_accuracies: np.ndarray


def _check_scores(scores, same) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and same must be 1-d of one length, got shapes {s.shape} and "
                         f"{y.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite, got {int((~np.isfinite(s)).sum())} "
                         "NaN/inf values")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("same must hold booleans (or 0/1)")
        y = y.astype(bool)
    return s, y


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The distinct score ``t`` maximising the accuracy of ``score >= t`` meaning "same"; the
    smallest such ``t`` among ties."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    candidates, first = np.unique(s, return_index=True)  # first index of each value, ascending
    same_below = np.concatenate([[0], np.cumsum(y)])[first]  # same pairs with score < t
    diff_below = first - same_below  # different pairs with score < t
    correct = (int(y.sum()) - same_below) + diff_below  # accepted same + rejected different
    return float(candidates[int(np.argmax(correct))])  # argmax: the first (smallest) best


def verification_accuracy(scores, same, folds: int = 10) -> VerificationResult:
    """The LFW protocol: pairs in order split into ``folds`` consecutive folds (sizes as
    ``numpy.array_split``: equal, the first ones one longer when the count does not divide);
    for each fold the threshold is the one that maximises the accuracy on the other folds'
    pairs, the candidates being every distinct score among those pairs, a pair being "same"
    when ``score >= threshold``, and the smallest threshold taken among equally good ones; the
    accuracy is then measured on the held-out fold.

    Args:
        scores: ``(N,)`` similarity of each pair (higher = more alike).
        same: ``(N,)`` bool, whether the pair shows one person.
        folds: number of folds (10 for LFW), ``2 <= folds <= N``.

    Returns:
        mean and standard deviation of the fold accuracies, the thresholds, the accuracies.
    """
    s, y = _check_scores(scores, same)
    if not 2 <= folds <= len(s):
        raise ValueError(f"folds must be in [2, number of pairs = {len(s)}], got {folds}")
    parts = np.array_split(np.arange(len(s)), folds)
    thresholds, accuracies = [], []
    for k, held in enumerate(parts):
        rest = np.concatenate([p for j, p in enumerate(parts) if j != k])
        t = _best_threshold(s[rest], y[rest])
        thresholds.append(t)
        accuracies.append(float(np.mean((s[held] >= t) == y[held])))
    acc = np.array(accuracies)
    return VerificationResult(float(acc.mean()), float(acc.std()), np.array(thresholds), acc)


def roc_curve(scores, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC over every distinct score as threshold (``score >= t`` accepted).

    Returns:
        ``(fpr, tpr, thresholds)``, each ``(K + 1,)`` for ``K`` distinct scores, thresholds
        decreasing from ``+inf`` (nothing accepted: the point ``(0, 0)``) to the lowest score
        (everything accepted: ``(1, 1)``). ``fpr`` / ``tpr`` are NaN when there are no
        different / same pairs. As ``sklearn.metrics.roc_curve(same, scores,
        drop_intermediate=False)``.
    """
    s, y = _check_scores(scores, same)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.r_[0, np.cumsum(y)[last]].astype(np.float64)
    fp = np.r_[0, (last + 1) - tp[1:]]
    n_pos, n_neg = int(y.sum()), len(y) - int(y.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / n_pos if n_pos else np.full_like(tp, np.nan)
        fpr = fp / n_neg if n_neg else np.full_like(fp, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


@dataclass(frozen=True)
class TarAtFar:
    """True accept rate at a false accept rate.

    Attributes:
        far: the requested FAR.
        tar: the highest TPR among the thresholds whose FPR is at most ``far``.
        threshold: the (smallest) threshold giving it (``inf`` when only "accept nothing" does).
        achieved_far: the FPR at that threshold.
        resolved: whether ``far * (number of different pairs) >= 1``, i.e. the set has enough
            different-person pairs to tell ``far`` from zero.
    """

    far: float
    tar: float
    threshold: float
    achieved_far: float
    resolved: bool


def tar_at_far(scores, same, far: float) -> TarAtFar:
    """TAR at FAR ``far`` (see :class:`TarAtFar`); needs same and different pairs."""
    if not 0 <= far <= 1:
        raise ValueError(f"far must be in [0, 1], got {far}")
    fpr, tpr, thr = roc_curve(scores, same)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        raise ValueError("TAR at FAR needs both same-person and different-person pairs")
    ok = np.flatnonzero(fpr <= far + 1e-12)  # fpr rises with the index: ok is a prefix
    k = int(ok[-1])
    n_neg = int((~_check_scores(scores, same)[1]).sum())
    return TarAtFar(float(far), float(tpr[k]), float(thr[k]), float(fpr[k]),
                    far * n_neg >= 1)


@dataclass(frozen=True)
class FaceVerification:
    """Everything ``scaledet face verify`` reports for one set of scored pairs."""

    protocol: VerificationResult
    tar: tuple[TarAtFar, ...]
    auc: float
    num_same: int
    num_different: int

    def as_dict(self) -> dict[str, float]:
        """Flat, JSON-safe numbers: ``accuracy``, ``accuracy_std``, ``auc``, ``tar@far=...``."""
        out = {"accuracy": self.protocol.accuracy, "accuracy_std": self.protocol.std,
               "auc": self.auc, "num_same": self.num_same, "num_different": self.num_different}
        for t in self.tar:
            out[f"tar@far={t.far:g}"] = t.tar
        return out


def verification_report(scores, same, folds: int = 10,
                        fars: tuple[float, ...] = (1e-3, 1e-4)) -> FaceVerification:
    """The protocol accuracy, the ROC's area and TAR at each FAR in ``fars``."""
    s, y = _check_scores(scores, same)
    fpr, tpr, _ = roc_curve(s, y)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids
    return FaceVerification(verification_accuracy(s, y, folds),
                            tuple(tar_at_far(s, y, f) for f in fars), auc,
                            int(y.sum()), int((~y).sum()))


# ---- LFW pairs.txt ------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """One line of ``pairs.txt``: image ``n1`` of ``name1`` and image ``n2`` of ``name2``
    (1-based image numbers, as LFW's ``name/name_0001.jpg``); ``same`` when one name."""

    name1: str
    n1: int
    name2: str
    n2: int
    line: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


@dataclass(frozen=True)
class PairsFile:
    """A parsed ``pairs.txt``: the pairs in file order and the header's fold layout
    (``folds`` sets of ``per_fold`` matched then ``per_fold`` mismatched pairs; ``folds = 1``
    for a one-number header such as ``pairsDevTrain.txt``'s)."""

    path: Path
    pairs: tuple[Pair, ...]
    folds: int
    per_fold: int

    @property
    def same(self) -> np.ndarray:
        return np.array([p.same for p in self.pairs], dtype=bool)

    def image_paths(self, root: str | os.PathLike,
                    exts: tuple[str, ...] = (".jpg", ".png", ".jpeg")
                    ) -> list[tuple[Path, Path]]:
        """The two image files of every pair under ``root``, LFW's layout
        ``root/NAME/NAME_NNNN.EXT`` (the first of ``exts`` that exists); a missing image is an
        error naming the pairs file's line."""
        root = Path(root)
        out = []
        for p in self.pairs:
            found = []
            for name, n in ((p.name1, p.n1), (p.name2, p.n2)):
                stem = root / name / f"{name}_{n:04d}"
                hit = next((stem.with_suffix(e) for e in exts
                            if stem.with_suffix(e).is_file()), None)
                if hit is None:
                    raise FileNotFoundError(f"{self.path}:{p.line}: no image {stem}"
                                            f"{{{','.join(exts)}}} under {root}")
                found.append(hit)
            out.append((found[0], found[1]))
        return out


def read_pairs(path: str | os.PathLike) -> PairsFile:
    """Read an LFW ``pairs.txt``: a header line (``folds per_fold``, or one count), then lines
    ``name n1 n2`` (a matched pair: two images of ``name``) or ``name1 n1 name2 n2`` (a
    mismatched pair), separated by tabs or spaces; blank lines are skipped. Checked: the header,
    every line's form and numbers (positive integers), that the count matches the header
    (``2 * folds * per_fold`` pairs) and that each fold holds ``per_fold`` matched then
    ``per_fold`` mismatched pairs; errors name ``file:line``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None
    numbered = [(i + 1, line.split()) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise ValueError(f"{path}: empty pairs file (expected a header such as '10 300')")
    head_line, head = numbered[0]
    if len(head) not in (1, 2) or not all(t.isdigit() and int(t) > 0 for t in head):
        raise ValueError(f"{path}:{head_line}: header must be 'FOLDS PAIRS_PER_FOLD' or "
                         f"'PAIRS' (positive integers), got {' '.join(head)!r}")
    folds, per_fold = (1, int(head[0])) if len(head) == 1 else (int(head[0]), int(head[1]))
    pairs = []
    for number, tokens in numbered[1:]:
        if len(tokens) == 3:
            name1, a, b = tokens
            name2 = name1
        elif len(tokens) == 4:
            name1, a, name2, b = tokens
        else:
            raise ValueError(f"{path}:{number}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                             f"got {len(tokens)} fields: {' '.join(tokens)!r}")
        if not (a.isdigit() and b.isdigit() and int(a) > 0 and int(b) > 0):
            raise ValueError(f"{path}:{number}: image numbers must be positive integers, got "
                             f"{a!r} and {b!r}")
        if len(tokens) == 4 and name1 == name2:
            raise ValueError(f"{path}:{number}: a mismatched pair names one person twice "
                             f"({name1!r}); a matched pair is written 'name n1 n2'")
        pairs.append(Pair(name1, int(a), name2, int(b), number))
    expected = 2 * folds * per_fold
    if len(pairs) != expected:
        raise ValueError(f"{path}:{head_line}: the header promises {expected} pairs "
                         f"({folds} folds x {per_fold} matched + {per_fold} mismatched), the "
                         f"file has {len(pairs)}")
    for k, pair in enumerate(pairs):
        want_same = (k % (2 * per_fold)) < per_fold
        if pair.same != want_same:
            fold = k // (2 * per_fold) + 1
            raise ValueError(f"{path}:{pair.line}: fold {fold} should hold {per_fold} matched "
                             f"then {per_fold} mismatched pairs; this line is "
                             f"{'matched' if pair.same else 'mismatched'}")
    return PairsFile(path, tuple(pairs), folds, per_fold)


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N,)`` cosine similarity of rows of ``a`` and ``b`` (``(N, D)`` each); a zero row
    scores 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = np.where((na > 0) & (nb > 0), na * nb, 1.0)
    return (a * b).sum(1) / denom

