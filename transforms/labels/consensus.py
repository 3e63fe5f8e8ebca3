"""Consensus labels from a label matrix: majority, unanimity and Dawid-Skene EM.

Everything works on a label matrix `L` of shape (n_items, n_annotators): integer class
codes 0..K-1, and -1 where that annotator did not label the item. The class list
(code -> name) is fixed beforehand so codes mean the same thing in every batch and on
every worker.

Per-item results (consensus codes, posteriors) are computed batch by batch. Dawid-Skene
EM alternates a per-batch E-step (`ds_estep`, needs only the broadcast `pi`, `prior`)
with additive M-step statistics (`ds_mstep_stats`, summed across batches with
`DSStats.merge`) and a tiny `ds_mstep` on the summed statistics, so a pipeline never
gathers the rows. All hot paths are numpy/pyarrow vector operations; the only Python
loops run over annotators, never over items.
"""

from dataclasses import dataclass
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MISSING = -1

ON_TIE = ("keep_first", "quarantine")


def encode_labels(columns: Sequence[pa.Array | pa.ChunkedArray], classes: List[str]) -> np.ndarray:
    """Maps one string label column per annotator to a label matrix.

    In: `columns`, one Arrow array per annotator (all the same length; non-string
    columns are cast to string first), and `classes`, the fixed class names whose
    positions are the codes. Out: int64 array (n_items, n_annotators) with the code
    of each label, and -1 for nulls and for values that are not in `classes` (exact,
    case-sensitive match: normalise text before encoding if formatting may differ).
    """
    if not columns:
        return np.empty((0, 0), dtype=np.int64)
    value_set = pa.array(list(classes), type=pa.string())
    out = []
    for column in columns:  # one vector op per annotator, never per row
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            column = pc.cast(column, pa.string())
        elif pa.types.is_large_string(column.type):
            column = pc.cast(column, pa.string())
        codes = pc.fill_null(pc.index_in(column, value_set=value_set), MISSING)
        out.append(codes.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
    lengths = {len(c) for c in out}
    if len(lengths) != 1:
        raise ValueError(f"label columns differ in length: {sorted(lengths)}")
    return np.stack(out, axis=1)


def _check(L: np.ndarray, K: int) -> np.ndarray:
    L = np.asarray(L)
    if L.ndim != 2:
        raise ValueError(f"label matrix must be 2-D (items x annotators), got shape {L.shape}")
    if not np.issubdtype(L.dtype, np.integer):
        raise TypeError(f"label matrix must hold integer codes, got {L.dtype}")
    if L.size and (L.min() < MISSING or L.max() >= K):
        raise ValueError(f"label codes must be in -1..{K - 1}")
    return L.astype(np.int64, copy=False)


def label_counts(L: np.ndarray, K: int) -> np.ndarray:
    """Per-item class counts.

    In: label matrix `L` (n, A) and the number of classes `K`. Out: int64 array (n, K),
    entry [i, k] = how many annotators gave item i class k (missing labels ignored).
    """
    L = _check(L, K)
    n = L.shape[0]
    present = L >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], L.shape)[present]
    return np.bincount(rows * K + L[present], minlength=n * K).reshape(n, K)


# --------------------------------------------------------------------------- consensus


class Consensus(NamedTuple):
    """Per-item consensus of one batch (all arrays have length n_items).

    codes: int64 consensus class, -1 where there is none.
    agreement: float64 share of the item's labels equal to the consensus; where there is
      no consensus (tie, not unanimous) it is the share of the most frequent class, so
      it still says how split the item was; NaN for items without labels.
    n_labels: int64 number of labels the item has.
    tie: bool, the most frequent class was not unique (set whatever `on_tie` did).
    no_labels: bool, the item has no labels at all.
    """

    codes: np.ndarray
    agreement: np.ndarray
    n_labels: np.ndarray
    tie: np.ndarray
    no_labels: np.ndarray

    def reasons(self) -> np.ndarray:
        """Why each item has no consensus: "no_labels", "tie", "disagreement" or "" (has one)."""
        return np.select(
            [self.no_labels, (self.codes < 0) & self.tie, self.codes < 0],
            ["no_labels", "tie", "disagreement"],
            default="",
        ).astype(object)


def _first_positions(L: np.ndarray, K: int) -> np.ndarray:
    """(n, K): column index of each class's first occurrence in the item's row, A if absent."""
    n, A = L.shape
    first = np.full((n, K), A, dtype=np.int64)
    rows = np.arange(n)
    # Writing columns right-to-left leaves the left-most occurrence in place.
    for j in range(A - 1, -1, -1):
        have = L[:, j] >= 0
        first[rows[have], L[have, j]] = j
    return first


def majority(L: np.ndarray, K: int, on_tie: str = "quarantine") -> Consensus:
    """Majority vote per item.

    In: label matrix `L` (n, A), number of classes `K`, and `on_tie`: "keep_first" picks,
    among the tied classes, the one whose first label comes first in annotator column
    order; "quarantine" gives -1 (with `tie` set) so the item can be routed aside.
    Out: a `Consensus`; items with no labels get -1 and `no_labels` set.
    """
    if on_tie not in ON_TIE:
        raise ValueError(f"on_tie must be one of {ON_TIE}, got {on_tie!r}")
    L = _check(L, K)
    counts = label_counts(L, K)
    n_labels = counts.sum(axis=1)
    no_labels = n_labels == 0
    top = counts.max(axis=1, initial=0)
    is_top = (counts == top[:, None]) & ~no_labels[:, None]
    tie = is_top.sum(axis=1) > 1
    if on_tie == "keep_first":
        rank = np.where(is_top, _first_positions(L, K), L.shape[1] + 1)
        codes = rank.argmin(axis=1) if K else np.zeros(len(L), np.int64)
    else:
        codes = is_top.argmax(axis=1) if K else np.zeros(len(L), np.int64)
        codes = np.where(tie, MISSING, codes)
    codes = np.where(no_labels, MISSING, codes).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(no_labels, np.nan, top / np.maximum(n_labels, 1))
    return Consensus(codes, agreement, n_labels, tie, no_labels)


def unanimous(L: np.ndarray, K: int) -> Consensus:
    """Unanimity per item: the class when every present label agrees, else -1.

    In: label matrix `L` (n, A) and `K`. Out: a `Consensus` (an item with a single
    label is unanimous; `tie` marks items whose top classes were tied).
    """
    L = _check(L, K)
    counts = label_counts(L, K)
    n_labels = counts.sum(axis=1)
    no_labels = n_labels == 0
    top = counts.max(axis=1, initial=0)
    tie = ((counts == top[:, None]).sum(axis=1) > 1) & ~no_labels
    all_agree = (top == n_labels) & ~no_labels
    codes = np.where(all_agree, counts.argmax(axis=1) if K else 0, MISSING).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(no_labels, np.nan, top / np.maximum(n_labels, 1))
    return Consensus(codes, agreement, n_labels, tie, no_labels)


def consensus_agreement(L: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Share of each item's labels that equal a given consensus.

    In: label matrix `L` (n, A) and consensus `codes` (n,), -1 for none. Out: float64
    (n,); 0 where there is no consensus but labels exist, NaN where there are no labels.
    """
    L = np.asarray(L)
    codes = np.asarray(codes)
    present = L >= 0
    n_labels = present.sum(axis=1)
    agree = (present & (L == codes[:, None]) & (codes[:, None] >= 0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_labels == 0, np.nan, agree / np.maximum(n_labels, 1))


def agreement_certain(method: str, on_tie: str, n_labels: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The items whose agreement with their consensus is 1 by construction, so that it
    measures nothing: every item under unanimity; under majority, an item with one label,
    and with two labels when ties are quarantined (two labels that disagree are a tie, so
    the two of an item that has a consensus always agree). Dawid-Skene can overrule every
    label, so none of its items is certain.

    In: the consensus `method`, `on_tie`, each item's number of labels and consensus codes
    (-1 for none). Out: bool (n,), False where there is no consensus.
    """
    has = np.asarray(codes) >= 0
    n_labels = np.asarray(n_labels)
    if method == "unanimous":
        return has
    if method == "majority":
        return has & (n_labels <= (2 if on_tie == "quarantine" else 1))
    return np.zeros(len(has), dtype=bool)


# --------------------------------------------------------------------------- Dawid-Skene


DS_SCALE = 2 ** 30   # Dawid-Skene statistics are sums of posteriors in units of 2**-30 (`DSStats`)
_EXACT_ROWS = 2 ** 22   # items summed at once in float64 with no rounding (`ds_mstep_stats`)


@dataclass
class DSStats:
    """Additive Dawid-Skene M-step statistics (sum them across batches with `merge`).

    confusion: int64 (A, K, K), [a, k, l] = expected number of items of true class k
      that annotator a labelled l. class_totals: int64 (K,), expected items per true
      class. Both in units of 1 / DS_SCALE: each item's posterior is rounded to that grid
      before it is added, so the sums are exact integers and the same whatever the order
      and the batching of the items (a runner with several workers merges partial sums in
      any order; float sums would differ in the last bits, and so would the published
      posteriors). The rounding is below 1e-9 an item; int64 holds 8.6e9 items a cell.
      n_items: number of labelled items.
    """

    confusion: np.ndarray
    class_totals: np.ndarray
    n_items: int = 0

    def merge(self, other: "DSStats") -> "DSStats":
        """Adds `other` into this accumulator in place and returns it."""
        if self.confusion.shape != other.confusion.shape:
            raise ValueError(f"cannot merge DS stats of shapes {self.confusion.shape} and {other.confusion.shape}")
        self.confusion += other.confusion
        self.class_totals += other.class_totals
        self.n_items += other.n_items
        return self

    @staticmethod
    def zeros(n_annotators: int, K: int) -> "DSStats":
        """An empty accumulator for `n_annotators` annotators and `K` classes."""
        return DSStats(np.zeros((n_annotators, K, K), np.int64), np.zeros(K, np.int64), 0)


def ds_mstep_stats(L: np.ndarray, T: np.ndarray, K: int) -> DSStats:
    """M-step sufficient statistics of one batch.

    In: label matrix `L` (n, A), item posteriors `T` (n, K) over the true class, and `K`.
    Out: `DSStats` for the batch. Items without labels are left out: they carry no
    information about annotators and would only echo the current prior back.
    """
    L = _check(L, K)
    T = np.asarray(T, dtype=np.float64)
    labelled = (L >= 0).any(axis=1)
    # Whole multiples of 2**-30 held as floats: float sums of integers below 2**53 are exact,
    # so BLAS adds them in any order (about 2x faster than an int64 einsum) and the result is
    # the integer sum. 2**22 items of at most 2**30 each stay below 2**53.
    L, T = L[labelled], np.rint(T[labelled] * DS_SCALE)
    confusion, totals = np.zeros((L.shape[1], K, K), np.int64), np.zeros(K, np.int64)
    for start in range(0, len(L), _EXACT_ROWS):
        l, t = L[start:start + _EXACT_ROWS], T[start:start + _EXACT_ROWS]
        onehot = (l[:, :, None] == np.arange(K)[None, None, :]).astype(np.float64)  # (n, A, K); -1 matches nothing
        confusion += np.einsum("ik,ial->akl", t, onehot, optimize=True).astype(np.int64)
        totals += t.sum(axis=0).astype(np.int64)
    return DSStats(confusion, totals, int(labelled.sum()))


def ds_init_stats(L: np.ndarray, K: int) -> DSStats:
    """First M-step statistics, from majority-vote soft counts.

    In: label matrix `L` (n, A) and `K`. Out: `DSStats` computed with each item's
    posterior set to its label distribution (counts / number of labels).
    """
    counts = label_counts(L, K).astype(np.float64)
    T = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    return ds_mstep_stats(L, T, K)


def ds_mstep(stats: DSStats, smoothing: float = 0.01) -> Tuple[np.ndarray, np.ndarray]:
    """Parameters from summed statistics.

    In: `DSStats` summed over all batches; `smoothing`, an additive pseudo-count that
    keeps every probability positive (an unseen label would otherwise get log 0 and
    veto a class forever). Out: (pi, prior): pi (A, K, K) row-stochastic confusion
    matrices, pi[a, k, l] = P(annotator a says l | true class k); prior (K,).
    """
    confusion = stats.confusion / DS_SCALE + smoothing
    pi = confusion / confusion.sum(axis=2, keepdims=True)
    totals = stats.class_totals / DS_SCALE + smoothing
    return pi, totals / totals.sum()


def ds_estep(L: np.ndarray, pi: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """E-step for one batch.

    In: label matrix `L` (n, A), confusion matrices `pi` (A, K, K) and class `prior`
    (K,). Out: posteriors T (n, K) over each item's true class (rows sum to 1; an item
    without labels gets the prior).
    """
    pi = np.asarray(pi, dtype=np.float64)
    K = pi.shape[1]
    L = _check(L, K)
    A = L.shape[1]
    if pi.shape[0] != A:
        raise ValueError(f"pi is for {pi.shape[0]} annotators, labels have {A}")
    log_pi = np.log(pi)
    # log_pi[a, :, L[i, a]] for every (i, a) at once -> (n, A, K), zeroed where unlabelled.
    gathered = log_pi[np.arange(A)[None, :], :, np.maximum(L, 0)]
    gathered = np.where((L >= 0)[:, :, None], gathered, 0.0)
    log_post = np.log(prior)[None, :] + gathered.sum(axis=1)
    log_post -= log_post.max(axis=1, keepdims=True)  # avoid underflow with many annotators
    post = np.exp(log_post)
    return post / post.sum(axis=1, keepdims=True)


def dawid_skene(
    L: np.ndarray, K: int, iterations: int = 20, smoothing: float = 0.01, tol: float = 1e-8
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dawid-Skene EM run locally on one label matrix (tests, small data).

    In: label matrix `L` (n, A), `K`, at most `iterations` EM rounds (stops early once
    posteriors move less than `tol`), `smoothing` as in `ds_mstep`. Out: (codes,
    posteriors, pi, prior): codes (n,) = most probable class, -1 for unlabelled items;
    posteriors (n, K); pi (A, K, K); prior (K,). A pipeline runs the same steps with
    the statistics combined across batches instead.
    """
    L = _check(L, K)
    pi, prior = ds_mstep(ds_init_stats(L, K), smoothing)
    T = ds_estep(L, pi, prior)
    for _ in range(iterations):
        pi, prior = ds_mstep(ds_mstep_stats(L, T, K), smoothing)
        T_new = ds_estep(L, pi, prior)
        done = np.abs(T_new - T).max(initial=0.0) < tol
        T = T_new
        if done:
            break
    codes = np.where((L >= 0).any(axis=1), T.argmax(axis=1), MISSING).astype(np.int64)
    return codes, T, pi, prior
