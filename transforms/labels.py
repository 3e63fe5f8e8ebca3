"""Label consolidation and inter-annotator agreement, as mergeable statistics.

Everything works on a label matrix `L` of shape (n_items, n_annotators): integer class
codes 0..K-1, and -1 where that annotator did not label the item. The class list
(code -> name) is fixed beforehand so codes mean the same thing in every batch and on
every worker.

Per-item results (consensus codes, posteriors) are computed batch by batch. Everything
dataset-wide is a small additive statistic, so a Beam pipeline computes it as a combine
over record batches and never gathers the rows:

* `AgreementStats` holds integer counts only; `merge` is exact and order-independent,
  so one accumulator per slice value gives per-slice figures that add up.
* Dawid-Skene EM alternates a per-batch E-step (`ds_estep`, needs only the broadcast
  `pi`, `prior`) with additive M-step statistics (`ds_mstep_stats`, summed across
  batches with `DSStats.merge`) and a tiny `ds_mstep` on the summed statistics.

All hot paths are numpy/pyarrow vector operations; the only Python loops run over
annotators, annotator pairs or distinct rater counts, never over items.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue

from transforms.batches import (QUARANTINE_SCHEMA, ROW, SOURCE, KeyedBatch, MergeCounts, as_batches, concat_batches,
                                count_reasons, hash_columns, json_records, split_by_key, table_to_batches)

MISSING = -1

ON_TIE = ("keep_first", "quarantine")


# --------------------------------------------------------------------------- encoding


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


# --------------------------------------------------------------------------- Dawid-Skene


@dataclass
class DSStats:
    """Additive Dawid-Skene M-step statistics (sum them across batches with `merge`).

    confusion: float64 (A, K, K), [a, k, l] = expected number of items of true class k
      that annotator a labelled l. class_totals: float64 (K,), expected items per true
      class. n_items: number of labelled items behind them.
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
        return DSStats(np.zeros((n_annotators, K, K)), np.zeros(K), 0)


def ds_mstep_stats(L: np.ndarray, T: np.ndarray, K: int) -> DSStats:
    """M-step sufficient statistics of one batch.

    In: label matrix `L` (n, A), item posteriors `T` (n, K) over the true class, and `K`.
    Out: `DSStats` for the batch. Items without labels are left out: they carry no
    information about annotators and would only echo the current prior back.
    """
    L = _check(L, K)
    T = np.asarray(T, dtype=np.float64)
    labelled = (L >= 0).any(axis=1)
    L, T = L[labelled], T[labelled]
    onehot = (L[:, :, None] == np.arange(K)[None, None, :]).astype(np.float64)  # (n, A, K); -1 matches nothing
    confusion = np.einsum("ik,ial->akl", T, onehot, optimize=True)
    return DSStats(confusion, T.sum(axis=0), int(labelled.sum()))


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
    confusion = stats.confusion + smoothing
    pi = confusion / confusion.sum(axis=2, keepdims=True)
    totals = stats.class_totals + smoothing
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


# --------------------------------------------------------------------------- agreement


def _ratio(num: float, den: float) -> Optional[float]:
    return None if den == 0 else float(num) / float(den)


@dataclass
class AgreementStats:
    """Mergeable inter-annotator agreement accumulator (pure integer counts).

    Build with `AgreementStats(K, n_annotators)`, feed batches with `add(L, consensus=)`,
    combine with `merge`, read figures with the result methods or `to_dict()`. Every
    field is an integer count, so merging in any order or batching gives identical
    results; per-slice figures come from one accumulator per slice value.

    Counts that feed item-averaged figures are kept per number of labels on the item
    (`m`, 0..A) so that the 1/(m(m-1)) and 1/(m-1) weights are applied only when the
    result is read, keeping the accumulators integral. Memory is O((A^2 + A) K^2)
    (coincidences per m, a contingency table per annotator pair): meant for label sets
    of up to a few hundred classes.
    """

    K: int
    n_annotators: int
    annotators: Optional[List[str]] = None
    classes: Optional[List[str]] = None
    # Items / labels.
    n_items: int = 0
    n_labels: int = 0
    items_by_m: np.ndarray = field(default=None)  # (A+1,) items with m labels
    unanimous_by_m: np.ndarray = field(default=None)  # (A+1,) of those, all labels equal
    class_counts: np.ndarray = field(default=None)  # (K,) labels per class, all items
    # Coincidences per m: sum over items with m labels of n_c n_k - [c=k] n_c, (A+1, K, K).
    # Its diagonal sums are Fleiss' agreeing ordered pairs; its row sums are label counts.
    coincidence_by_m: np.ndarray = field(default=None)
    # Per ordered annotator pair (a<b used): contingency of labels on items both labelled.
    pair_tables: np.ndarray = field(default=None)  # (A, A, K, K)
    # Per annotator.
    labels_by_annotator: np.ndarray = field(default=None)  # (A,)
    with_consensus_by_annotator: np.ndarray = field(default=None)  # (A,) labelled & consensus exists
    agree_consensus_by_annotator: np.ndarray = field(default=None)  # (A,) ... and equal to it
    # Per consensus class, split by m: items and their labels equal to the consensus.
    consensus_items_by_class_m: np.ndarray = field(default=None)  # (K, A+1)
    consensus_agree_by_class_m: np.ndarray = field(default=None)  # (K, A+1)
    n_items_consensus_given: int = 0  # items added with a consensus vector
    n_items_no_consensus: int = 0  # of those, labelled but consensus -1

    def __post_init__(self) -> None:
        K, A = self.K, self.n_annotators
        defaults = {
            "items_by_m": (A + 1,), "unanimous_by_m": (A + 1,), "class_counts": (K,), "coincidence_by_m": (A + 1, K, K),
            "pair_tables": (A, A, K, K), "labels_by_annotator": (A,), "with_consensus_by_annotator": (A,),
            "agree_consensus_by_annotator": (A,), "consensus_items_by_class_m": (K, A + 1),
            "consensus_agree_by_class_m": (K, A + 1),
        }
        for name, shape in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape, dtype=np.int64))

    _ARRAYS = ("items_by_m", "unanimous_by_m", "class_counts", "coincidence_by_m", "pair_tables", "labels_by_annotator",
               "with_consensus_by_annotator", "agree_consensus_by_annotator",
               "consensus_items_by_class_m", "consensus_agree_by_class_m")
    _SCALARS = ("n_items", "n_labels", "n_items_consensus_given", "n_items_no_consensus")

    # ---------------------------------------------------------------- accumulate

    def add(self, L: np.ndarray, consensus: Optional[np.ndarray] = None) -> "AgreementStats":
        """Adds one batch in place and returns self.

        In: label matrix `L` (n, A) with this accumulator's K and A; optionally the
        batch's `consensus` codes (n,), -1 for none, to also count per-annotator and
        per-class agreement with the consensus (an annotator's own label is part of the
        consensus it is compared with).
        """
        K, A = self.K, self.n_annotators
        L = _check(L, K)
        if L.shape[1] != A:
            raise ValueError(f"expected {A} annotator columns, got {L.shape[1]}")
        n = L.shape[0]
        present = L >= 0
        counts = label_counts(L, K)
        m = counts.sum(axis=1)

        self.n_items += n
        self.n_labels += int(m.sum())
        self.items_by_m += np.bincount(m, minlength=A + 1)
        self.class_counts += counts.sum(axis=0)
        single_class = counts.max(axis=1, initial=0) == m
        self.unanimous_by_m += np.bincount(m[single_class], minlength=A + 1)

        # Coincidences: one (K, K) outer-product sum per distinct m, via matrix products.
        for mm in np.unique(m[m >= 2]):
            c = counts[m == mm]
            self.coincidence_by_m[mm] += c.T @ c - np.diag(c.sum(axis=0))

        # All annotator pairs at once: one bincount over (pair, label_a, label_b).
        ia, ib = np.triu_indices(A, k=1)
        if len(ia):
            la, lb = L[:, ia], L[:, ib]
            both = (la >= 0) & (lb >= 0)
            pair_id = np.broadcast_to(np.arange(len(ia))[None, :], la.shape)[both]
            flat = np.bincount((pair_id * K + la[both]) * K + lb[both], minlength=len(ia) * K * K)
            self.pair_tables[ia, ib] += flat.reshape(len(ia), K, K)

        self.labels_by_annotator += present.sum(axis=0)

        if consensus is not None:
            codes = np.asarray(consensus, dtype=np.int64)
            if codes.shape != (n,):
                raise ValueError(f"consensus must have shape ({n},), got {codes.shape}")
            has = codes >= 0
            self.n_items_consensus_given += n
            self.n_items_no_consensus += int(((m > 0) & ~has).sum())
            self.with_consensus_by_annotator += (present & has[:, None]).sum(axis=0)
            self.agree_consensus_by_annotator += (present & has[:, None] & (L == codes[:, None])).sum(axis=0)
            agree = counts[np.arange(n)[has], codes[has]]
            cell = codes[has] * (A + 1) + m[has]
            self.consensus_items_by_class_m += np.bincount(cell, minlength=K * (A + 1)).reshape(K, A + 1)
            self.consensus_agree_by_class_m += np.bincount(
                cell, weights=agree, minlength=K * (A + 1)).astype(np.int64).reshape(K, A + 1)
        return self

    def merge(self, other: "AgreementStats") -> "AgreementStats":
        """Adds `other`'s counts into this accumulator in place (exact) and returns self."""
        if (self.K, self.n_annotators) != (other.K, other.n_annotators):
            raise ValueError("cannot merge agreement stats with different K or number of annotators")
        for name in self._ARRAYS:
            getattr(self, name).__iadd__(getattr(other, name))
        for name in self._SCALARS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def counts_equal(self, other: "AgreementStats") -> bool:
        """True when both accumulators hold identical counts."""
        return all(np.array_equal(getattr(self, a), getattr(other, a)) for a in self._ARRAYS) and all(
            getattr(self, s) == getattr(other, s) for s in self._SCALARS)

    # ---------------------------------------------------------------- results

    def _weights(self, power: int) -> np.ndarray:
        """1/(m(m-1)) (power 2) or 1/(m-1) (power 1) per m, 0 for m < 2 (not pairable)."""
        m = np.arange(self.n_annotators + 1, dtype=np.float64)
        den = m * (m - 1) if power == 2 else m - 1
        return np.where(m >= 2, 1.0 / np.where(m >= 2, den, 1.0), 0.0)

    @property
    def n_pairable_items(self) -> int:
        """Items with at least two labels (the only ones agreement can be measured on)."""
        return int(self.items_by_m[2:].sum())

    @property
    def n_labelled_items(self) -> int:
        """Items with at least one label."""
        return int(self.items_by_m[1:].sum())

    def _agreeing_pairs_by_m(self) -> np.ndarray:
        return np.trace(self.coincidence_by_m, axis1=1, axis2=2)

    def hlp(self) -> Optional[float]:
        """Human-level performance: mean per-item pairwise agreement (Fleiss' P-bar).

        Over items with >= 2 labels, the mean of sum_k n_ik(n_ik-1) / (n_i(n_i-1)): the
        chance that two different annotators picked at random agree on a random item.
        None when no item has two labels.
        """
        return _ratio((self._agreeing_pairs_by_m() * self._weights(2)).sum(), self.n_pairable_items)

    def pairwise_agreement_pooled(self) -> Optional[float]:
        """Pooled pairwise agreement: all agreeing ordered pairs / all ordered pairs.

        Equals `hlp()` when every item has the same number of labels; otherwise it
        weights items with more labels more. None when there are no pairs.
        """
        m = np.arange(self.n_annotators + 1)
        return _ratio(self._agreeing_pairs_by_m().sum(), (self.items_by_m * m * (m - 1)).sum())

    def _pairable_class_counts(self) -> np.ndarray:
        return self.coincidence_by_m.sum(axis=(0, 2))  # row sums = labels per class on pairable items

    def fleiss_kappa(self) -> Optional[float]:
        """Fleiss' kappa over items with >= 2 labels.

        P-bar = `hlp()`; P_e = sum_j p_j^2 with p_j the share of class j among all labels
        on those items. With a constant number of raters this is exactly Fleiss (1971)
        (= statsmodels' fleiss_kappa); with varying raters it is the usual generalisation
        that averages P_i per item and pools the labels for p_j. None when undefined.
        """
        p_bar = self.hlp()
        n_c = self._pairable_class_counts().astype(np.float64)
        total = n_c.sum()
        if p_bar is None or total == 0:
            return None
        p = n_c / total
        p_e = float((p * p).sum())
        return None if p_e == 1.0 else (p_bar - p_e) / (1.0 - p_e)

    def coincidence_matrix(self) -> np.ndarray:
        """Krippendorff's coincidence matrix (K, K) float: pairs within items weighted 1/(m-1)."""
        return np.tensordot(self._weights(1), self.coincidence_by_m.astype(np.float64), axes=1)

    def krippendorff_alpha(self) -> Optional[float]:
        """Krippendorff's alpha, nominal level, from the coincidence matrix.

        alpha = 1 - (n-1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k, with n the number of
        pairable values (labels on items with >= 2 labels). None when undefined.
        """
        o = self.coincidence_matrix()
        n_c = o.sum(axis=1)
        n = n_c.sum()
        expected = n * n - (n_c * n_c).sum()
        if n <= 1 or expected == 0:
            return None
        observed = o.sum() - np.trace(o)
        return float(1.0 - (n - 1.0) * observed / expected)

    def cohen_kappas(self) -> Dict[Tuple[int, int], Optional[float]]:
        """Cohen's kappa of each annotator pair (a, b), a < b, on items both labelled.

        Same formula as sklearn's cohen_kappa_score (unweighted). None when the pair
        shares no item or chance agreement is 1 (kappa undefined).
        """
        out: Dict[Tuple[int, int], Optional[float]] = {}
        for a, b in zip(*np.triu_indices(self.n_annotators, k=1)):
            t = self.pair_tables[a, b].astype(np.float64)
            n = t.sum()
            if n == 0:
                out[(int(a), int(b))] = None
                continue
            p_o = np.trace(t) / n
            p_e = float((t.sum(axis=1) * t.sum(axis=0)).sum()) / (n * n)
            out[(int(a), int(b))] = None if p_e == 1.0 else float((p_o - p_e) / (1.0 - p_e))
        return out

    def pair_counts(self) -> Dict[Tuple[int, int], int]:
        """Number of items each annotator pair (a < b) both labelled."""
        return {(int(a), int(b)): int(self.pair_tables[a, b].sum())
                for a, b in zip(*np.triu_indices(self.n_annotators, k=1))}

    def unanimous_share(self) -> Optional[float]:
        """Share of items with >= 2 labels whose labels are all the same class."""
        return _ratio(self.unanimous_by_m[2:].sum(), self.n_pairable_items)

    def annotator_agreement(self) -> List[Dict[str, object]]:
        """Per annotator: labels given, items compared with the consensus, share agreeing.

        Also the annotator's pooled pairwise agreement with every other annotator (from
        the pair tables). Agreement with the consensus is None until `add` was given
        consensus codes (or when the annotator labelled no item with a consensus).
        """
        A = self.n_annotators
        diag = np.trace(self.pair_tables, axis1=2, axis2=3)  # (A, A) agreeing items, a<b filled
        tot = self.pair_tables.sum(axis=(2, 3))
        diag, tot = diag + diag.T, tot + tot.T
        rows = []
        for a in range(A):
            rows.append({
                "annotator": self.annotators[a] if self.annotators else a,
                "labels": int(self.labels_by_annotator[a]),
                "items_with_consensus": int(self.with_consensus_by_annotator[a]),
                "agreement_with_consensus": _ratio(self.agree_consensus_by_annotator[a],
                                                   self.with_consensus_by_annotator[a]),
                "pairs_with_others": int(tot[a].sum()),
                "pairwise_agreement_with_others": _ratio(diag[a].sum(), tot[a].sum()),
            })
        return rows

    def class_agreement(self) -> List[Dict[str, object]]:
        """Per consensus class: items, mean item agreement and pooled label agreement.

        mean_item_agreement = mean over items whose consensus is the class of the share of
        their labels equal to it; label_agreement pools the labels of those items. Needs
        `add(..., consensus=)`; also reports each class's share of all labels.
        """
        m = np.arange(self.n_annotators + 1, dtype=np.float64)
        inv_m = np.where(m > 0, 1.0 / np.maximum(m, 1.0), 0.0)
        items = self.consensus_items_by_class_m.sum(axis=1)
        labels = (self.consensus_items_by_class_m * np.arange(self.n_annotators + 1)).sum(axis=1)
        agree = self.consensus_agree_by_class_m.sum(axis=1)
        mean_item = (self.consensus_agree_by_class_m * inv_m).sum(axis=1)
        label_totals = self.class_counts
        rows = []
        for k in range(self.K):
            rows.append({
                "class": self.classes[k] if self.classes else k,
                "items": int(items[k]),
                "mean_item_agreement": _ratio(mean_item[k], items[k]),
                "labels_on_items": int(labels[k]),
                "label_agreement": _ratio(agree[k], labels[k]),
                "labels_of_class": int(label_totals[k]),
                "label_share": _ratio(label_totals[k], self.n_labels),
            })
        return rows

    def to_dict(self) -> Dict[str, object]:
        """A JSON-ready summary; every figure comes with the number of items behind it."""
        kappas = self.cohen_kappas()
        pairs = self.pair_counts()
        return {
            "classes": list(self.classes) if self.classes else list(range(self.K)),
            "annotators": list(self.annotators) if self.annotators else list(range(self.n_annotators)),
            "items": self.n_items,
            "labelled_items": self.n_labelled_items,
            "pairable_items": self.n_pairable_items,
            "labels": self.n_labels,
            "items_by_label_count": {int(m): int(c) for m, c in enumerate(self.items_by_m) if c},
            "hlp": {"value": self.hlp(), "items": self.n_pairable_items,
                    "definition": "mean over items with >=2 labels of the share of agreeing annotator pairs"},
            "pairwise_agreement_pooled": {"value": self.pairwise_agreement_pooled(), "items": self.n_pairable_items},
            "fleiss_kappa": {"value": self.fleiss_kappa(), "items": self.n_pairable_items},
            "krippendorff_alpha_nominal": {"value": self.krippendorff_alpha(), "items": self.n_pairable_items},
            "unanimous_share": {"value": self.unanimous_share(), "items": self.n_pairable_items,
                                "unanimous_items": int(self.unanimous_by_m[2:].sum())},
            "cohen_kappa": [{"pair": [a, b], "kappa": kappas[(a, b)], "items": pairs[(a, b)]} for (a, b) in kappas],
            "consensus": {"items_given": self.n_items_consensus_given,
                          "labelled_items_without_consensus": self.n_items_no_consensus},
            "annotators_detail": self.annotator_agreement(),
            "classes_detail": self.class_agreement(),
        }


# --------------------------------------------------------------------------- the Beam stage

AGREEMENT = "label_agreement"
N_LABELS = "label_count"


@dataclass(frozen=True)
class LabelsSpec:
    """What the labels stage needs of the config."""

    annotators: Tuple[str, ...]
    label: str                               # the column the consensus is written to
    consensus: str = "majority"              # majority | unanimous | dawid_skene
    on_tie: str = "quarantine"
    slices: Tuple[str, ...] = ()
    classes: Tuple[str, ...] = ()            # fixed class list; empty: found in the data
    iterations: int = 10                     # Dawid-Skene EM rounds (each one pass over the data)
    matrix_column: Optional[str] = None      # long form: one list column, a label per known annotator


def label_matrix(batch: pa.RecordBatch, spec: LabelsSpec, classes: Sequence[str]) -> np.ndarray:
    """The batch's (n, A) label matrix: from the annotator columns (wide form) or from
    the fixed-width list column of the long form."""
    if spec.matrix_column:
        lists = batch.column(spec.matrix_column)
        n = batch.num_rows
        flat = encode_labels([pc.list_flatten(lists)], list(classes))
        return flat.reshape(n, -1) if n else np.zeros((0, 0), np.int64)
    return encode_labels([batch.column(a) for a in spec.annotators], list(classes))


def _class_values(batch: pa.RecordBatch, spec: LabelsSpec) -> set:
    columns = ([pc.list_flatten(batch.column(spec.matrix_column))] if spec.matrix_column
               else [batch.column(a) for a in spec.annotators])
    values = set()
    for col in columns:
        values.update(v for v in pc.unique(col).to_pylist() if v is not None)
    return values


def _consensus_for(L: np.ndarray, K: int, spec: LabelsSpec, ds: Optional[Tuple[np.ndarray, np.ndarray]]) -> Consensus:
    if spec.consensus == "unanimous":
        return unanimous(L, K)
    if spec.consensus == "dawid_skene":
        pi, prior = ds
        T = ds_estep(L, pi, prior)
        n_labels = (L >= 0).sum(axis=1).astype(np.int64)
        has = n_labels > 0
        top = T.max(axis=1, initial=0.0)
        tie = (np.isclose(T, top[:, None]).sum(axis=1) > 1) & has
        codes = np.where(has, T.argmax(axis=1), MISSING)
        if spec.on_tie == "quarantine":
            codes = np.where(tie, MISSING, codes)
        return Consensus(codes.astype(np.int64), consensus_agreement(L, codes), n_labels, tie, ~has)
    return majority(L, K, spec.on_tie)


def apply_consensus(batch: pa.RecordBatch, spec: LabelsSpec, classes: Sequence[str],
                    ds: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[pa.RecordBatch, pa.RecordBatch]:
    """(rows with the consensus label, quarantine rows without one) of a batch.

    The consensus goes into `spec.label`; `label_agreement` (share of the item's labels
    equal to it) and `label_count` ride along with the annotators' own columns.
    """
    K = len(classes)
    L = label_matrix(batch, spec, classes)
    result = _consensus_for(L, K, spec, ds)
    names = pa.array(list(classes) + [None], pa.string())
    label = names.take(pa.array(np.where(result.codes >= 0, result.codes, K)))
    agreement = consensus_agreement(L, result.codes)
    out = batch
    for name, arr in ((spec.label, label), (AGREEMENT, pa.array(agreement, pa.float64())),
                      (N_LABELS, pa.array(result.n_labels, pa.int64()))):
        idx = out.schema.get_field_index(name)
        if idx >= 0:
            out = pa.RecordBatch.from_arrays([arr if i == idx else c for i, c in enumerate(out.columns)],
                                             names=out.schema.names)
        else:
            out = pa.RecordBatch.from_arrays(list(out.columns) + [arr], names=out.schema.names + [name])
    keep = result.codes >= 0
    reasons = np.char.add("label_", result.reasons().astype(str))
    bad = np.flatnonzero(~keep)
    rows = pa.Table.from_batches([out.take(pa.array(bad))])
    data_cols = [c for c in rows.schema.names
                 if c not in (SOURCE, ROW, AGREEMENT, N_LABELS, "example_id", spec.matrix_column)]
    quarantine = pa.RecordBatch.from_arrays([
        json_records(rows, data_cols),
        pa.array(reasons[bad].tolist(), pa.string()),
        pa.array(["labels"] * len(bad), pa.string()),
        rows.column(SOURCE).combine_chunks() if len(bad) else pa.array([], pa.string()),
        rows.column(ROW).combine_chunks() if len(bad) else pa.array([], pa.int64()),
    ], schema=QUARANTINE_SCHEMA)
    return out.filter(pa.array(keep)), quarantine


class _ConsensusFn(beam.DoFn):
    QUARANTINE = "quarantine"

    def __init__(self, spec: LabelsSpec):
        self._spec = spec

    def process(self, batch, classes, ds=None):
        rows, quarantine = apply_consensus(batch, self._spec, classes, ds)
        if rows.num_rows:
            yield rows
        if quarantine.num_rows:
            count_reasons(quarantine)
            yield pvalue.TaggedOutput(self.QUARANTINE, quarantine)


def _agreement_stats(batch: pa.RecordBatch, spec: LabelsSpec, classes: Sequence[str], names: Sequence[str],
                     ds=None) -> Dict[str, AgreementStats]:
    """{"": overall, "<slice column>=<value>": ...} agreement counts of one batch."""
    K, A = len(classes), len(names)
    L = label_matrix(batch, spec, classes)
    codes = _consensus_for(L, K, spec, ds).codes
    out = {"": AgreementStats(K, A, list(names), list(classes)).add(L, codes)}
    for col in spec.slices:
        values = pc.fill_null(pc.cast(batch.column(col), pa.string()), "<null>")
        enc = pc.dictionary_encode(values)
        idx = enc.indices.to_numpy(zero_copy_only=False)
        for j, value in enumerate(enc.dictionary.to_pylist()):
            sel = idx == j
            out[_json.dumps([col, value])] = AgreementStats(K, A, list(names), list(classes)).add(
                L[sel], codes[sel])
    return out


class _MergeAgreement(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, stats):
        return self.merge_accumulators([acc, stats])

    def merge_accumulators(self, accs):
        out: Dict[str, AgreementStats] = {}
        for acc in accs:
            for key, st in acc.items():
                if key in out:
                    out[key].merge(st)
                else:
                    out[key] = AgreementStats(st.K, st.n_annotators, st.annotators, st.classes).merge(st)
        return out

    def extract_output(self, acc):
        return acc


class _SumDS(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, acc, stats):
        return stats if acc is None else DSStats.merge(acc, stats)

    def merge_accumulators(self, accs):
        present = [a for a in accs if a is not None]
        if not present:
            return None
        out = present[0]
        for a in present[1:]:
            out = out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


def agreement_report(stats: Dict[str, AgreementStats], spec: LabelsSpec) -> Dict:
    """The `labels` section of report.json: overall figures, then slices, classes and
    annotators ranked by agreement, lowest first, each with the items behind it."""
    overall = stats[""].to_dict() if "" in stats else {}
    slices: Dict[str, List[Dict]] = {}
    for key, st in stats.items():
        if not key:
            continue
        col, value = _json.loads(key)
        slices.setdefault(col, []).append({
            "value": value, "items": st.n_items, "pairable_items": st.n_pairable_items,
            "hlp": st.hlp(), "fleiss_kappa": st.fleiss_kappa(), "krippendorff_alpha": st.krippendorff_alpha(),
            "unanimous_share": st.unanimous_share()})
    for rows in slices.values():
        rows.sort(key=lambda r: (r["hlp"] is None, r["hlp"] if r["hlp"] is not None else 0, str(r["value"])))
    classes = sorted(overall.get("classes_detail", []),
                     key=lambda r: (r["mean_item_agreement"] is None, r["mean_item_agreement"] or 0))
    annotators = sorted(overall.get("annotators_detail", []),
                        key=lambda r: (r["agreement_with_consensus"] is None, r["agreement_with_consensus"] or 0))
    return {"consensus": spec.consensus, "on_tie": spec.on_tie, "overall": overall,
            "slices_by_agreement": slices, "classes_by_agreement": classes, "annotators_by_agreement": annotators}


class ConsolidateLabels(beam.PTransform):
    """Clean batches with annotator columns → batches whose label is the consensus.

    Outputs (a dict): "rows" (label set, plus label_agreement and label_count),
    "quarantine" (no consensus: label_tie, label_disagreement, label_no_labels; stage
    "labels"), "report" (one dict, `agreement_report`). The class list comes from
    `spec.classes` or from the data (a pre-pass); Dawid-Skene runs `spec.iterations`
    EM rounds, each an E-step per batch and a small combine of M-step statistics.
    """

    def __init__(self, spec: LabelsSpec, annotator_names=None):
        """`annotator_names`: for the long form, a one-element PCollection with the list of
        annotators, in the order of the matrix column."""
        super().__init__()
        self._spec = spec
        self._names = annotator_names

    def expand(self, batches):
        spec = self._spec
        if self._names is None:
            names = batches.pipeline | "AnnotatorNames" >> beam.Create([list(spec.annotators)])
        else:
            names = self._names
        if spec.classes:
            classes = batches.pipeline | "Classes" >> beam.Create([list(spec.classes)])
        else:
            classes = (batches
                       | "LabelValues" >> beam.Map(_class_values, spec)
                       | "UnionValues" >> beam.CombineGlobally(lambda sets: set().union(*sets))
                       | "SortClasses" >> beam.Map(sorted))
        classes_si = pvalue.AsSingleton(classes)
        ds_si = None
        if spec.consensus == "dawid_skene":
            def encode(b, cls):
                return label_matrix(b, spec, cls)

            stats = (batches
                     | "DSInit" >> beam.Map(lambda b, cls: ds_init_stats(encode(b, cls), len(cls)), classes_si)
                     | "DSInitSum" >> beam.CombineGlobally(_SumDS()))
            params = stats | "DSMStep0" >> beam.Map(ds_mstep)
            for i in range(1, spec.iterations + 1):
                def step(b, cls, prm):
                    L = encode(b, cls)
                    return ds_mstep_stats(L, ds_estep(L, *prm), len(cls))

                stats = (batches
                         | f"DSStats[{i}]" >> beam.Map(step, classes_si, pvalue.AsSingleton(params))
                         | f"DSSum[{i}]" >> beam.CombineGlobally(_SumDS()))
                params = stats | f"DSMStep[{i}]" >> beam.Map(ds_mstep)
            ds_si = pvalue.AsSingleton(params)
        extra = [ds_si] if ds_si is not None else []
        parts = as_batches(batches | "Consensus" >> beam.ParDo(_ConsensusFn(spec), classes_si, *extra).with_outputs(
            _ConsensusFn.QUARANTINE, main="rows"), "rows", _ConsensusFn.QUARANTINE)
        report = (batches
                  | "AgreementStats" >> beam.Map(_agreement_stats, spec, classes_si, pvalue.AsSingleton(names),
                                                 *extra)
                  | "MergeAgreement" >> beam.CombineGlobally(_MergeAgreement())
                  | "AgreementReport" >> beam.Map(agreement_report, spec))
        return {"rows": parts.rows, "quarantine": parts.quarantine, "report": report}


# --------------------------------------------------------------------------- long form

ANNOTATIONS = "annotations"        # per example: JSON {annotator: label}, riding along in outputs
MATRIX = "_label_matrix"           # per example: a label per known annotator (internal)


def attach_annotations(examples: pa.Table, annotations: pa.Table, id_column: str,
                       annotators: Sequence[str]) -> Tuple[pa.Table, Dict[str, int]]:
    """Examples of one id bucket + their annotations → examples with the label matrix
    column (one entry per known annotator, null where missing) and a JSON `annotations`
    column. An annotator's second label for the same example is ignored (the first by
    source and row counts). Returns the joined table and counts for the report.
    """
    stats = {"annotations": annotations.num_rows, "orphan": 0, "repeated": 0}
    n = examples.num_rows
    if annotations.num_rows:
        order = pc.sort_indices(annotations, sort_keys=[(SOURCE, "ascending"), (ROW, "ascending")])
        frame = annotations.take(order).select(["id", "annotator", "label"]).to_pandas()
        repeated = frame.duplicated(["id", "annotator"], keep="first")
        stats["repeated"] = int(repeated.sum())
        frame = frame[~repeated]
    else:
        frame = pd.DataFrame({"id": [], "annotator": [], "label": []})
    ids = examples.column(id_column).to_pandas().astype(object) if n else pd.Series([], dtype=object)
    stats["orphan"] = int((~frame["id"].isin(set(ids))).sum())
    wide = frame.pivot(index="id", columns="annotator", values="label") if len(frame) else pd.DataFrame()
    wide = wide.reindex(index=ids, columns=list(annotators))
    values = wide.to_numpy(dtype=object).reshape(-1) if n else np.array([], dtype=object)
    offsets = np.arange(0, n * len(annotators) + 1, max(len(annotators), 1), dtype=np.int32)[: n + 1]
    flat = pa.array(values, pa.string(), from_pandas=True)
    matrix = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)
    texts = pa.array([_json.dumps({a: v for a, v in zip(annotators, row) if isinstance(v, str)}, sort_keys=True)
                      for row in wide.to_numpy(dtype=object)] if n else [], pa.string())
    return examples.append_column(MATRIX, matrix).append_column(ANNOTATIONS, texts), stats


class _JoinBucketFn(beam.DoFn):
    STATS = "stats"

    def __init__(self, id_column: str):
        self._id = id_column

    def process(self, element, annotators):
        _, grouped = element
        examples = [b for b in grouped["examples"]]
        if not examples:
            _, stats = attach_annotations(pa.table({self._id: pa.array([], pa.string())}),
                                          concat_batches(grouped["annotations"]), self._id, annotators)
            yield pvalue.TaggedOutput(self.STATS, stats)
            return
        table, stats = attach_annotations(concat_batches(examples), concat_batches(grouped["annotations"]),
                                          self._id, annotators)
        yield from table_to_batches(table)
        yield pvalue.TaggedOutput(self.STATS, stats)


class AttachAnnotations(beam.PTransform):
    """(examples, annotations) → examples carrying their annotations, for ConsolidateLabels.

    `annotations` batches have columns id, annotator, label, _source, _row. Both sides are
    shuffled by a hash bucket of the example id (whole sub-batches). Outputs a dict:
    "rows", "annotators" (one element: the sorted annotator list), "stats" (one dict).
    """

    def __init__(self, id_column: str, buckets: int = 16):
        super().__init__()
        self._id = id_column
        self._buckets = max(1, buckets)

    def expand(self, pcolls):
        examples, annotations = pcolls
        buckets, id_column = self._buckets, self._id

        def by_bucket(batch, column):
            keys = hash_columns(pa.table({"k": pc.cast(batch.column(column), pa.string())}), ["k"])
            yield from split_by_key(batch, (keys % np.uint64(buckets)).astype(np.int64))

        annotators = (annotations
                      | "AnnotatorValues" >> beam.Map(lambda b: set(v for v in pc.unique(b.column("annotator"))
                                                                    .to_pylist() if v is not None))
                      | "UnionAnnotators" >> beam.CombineGlobally(lambda sets: set().union(*sets))
                      | "SortAnnotators" >> beam.Map(sorted))
        joined = ({"examples": examples | "ExampleBuckets" >> beam.FlatMap(by_bucket, id_column)
                   .with_output_types(KeyedBatch),
                   "annotations": annotations | "AnnotationBuckets" >> beam.FlatMap(by_bucket, "id")
                   .with_output_types(KeyedBatch)}
                  | "JoinById" >> beam.CoGroupByKey()
                  | "Attach" >> beam.ParDo(_JoinBucketFn(id_column), pvalue.AsSingleton(annotators))
                  .with_outputs(_JoinBucketFn.STATS, main="rows"))
        as_batches(joined, "rows")
        stats = joined[_JoinBucketFn.STATS] | "SumJoinStats" >> beam.CombineGlobally(MergeCounts())
        return {"rows": joined.rows, "annotators": annotators, "stats": stats}
