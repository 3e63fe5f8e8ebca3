"""Inter-annotator agreement as a mergeable accumulator of integer counts.

`AgreementStats` holds integer counts only; `merge` is exact and order-independent, so
a Beam combine over record batches computes dataset-wide figures without gathering the
rows, and one accumulator per slice value gives per-slice figures that add up. The
figures: HLP (mean pairwise agreement), Fleiss' kappa, Krippendorff's alpha, Cohen's
kappa per annotator pair, agreement with the consensus per annotator and per class,
HLP (pairwise agreement) per consensus class and Fleiss' kappa per class (one against
the rest); for ordinal classes, weighted kappas and Krippendorff's ordinal and interval
alpha, all from the same counts.

Ordinal classes are weighted by the squared distance of their ranks (quadratic weights,
w = 1 - (c - k)^2 / (K - 1)^2): a rating two steps off costs four times one step off, so
the weighted kappa reads like an intraclass correlation (Fleiss & Cohen 1973), and it is
the metric of Krippendorff's interval alpha on the ranks, which the multi-rater figure
is tied to exactly (see `weighted_kappa`).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from transforms.labels.consensus import _check, label_counts


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
    # ... and their agreeing ordered annotator pairs, sum_k n_k(n_k - 1): per-class HLP.
    consensus_pairs_by_class_m: np.ndarray = field(default=None)  # (K, A+1)
    # The two arrays above leave out the items whose agreement with their consensus is 1 by
    # construction (`add(certain=)`: two labels under majority with ties quarantined, one
    # label, unanimity): counted here instead, per consensus class and m.
    certain_by_class_m: np.ndarray = field(default=None)  # (K, A+1)
    # Items with labels whose consensus is a class none of their annotators chose (Dawid-Skene).
    unchosen_by_class: np.ndarray = field(default=None)  # (K,)
    n_items_consensus_given: int = 0  # items added with a consensus vector
    n_items_no_consensus: int = 0  # of those, labelled but consensus -1

    def __post_init__(self) -> None:
        K, A = self.K, self.n_annotators
        defaults = {
            "items_by_m": (A + 1,), "unanimous_by_m": (A + 1,), "class_counts": (K,), "coincidence_by_m": (A + 1, K, K),
            "pair_tables": (A, A, K, K), "labels_by_annotator": (A,), "with_consensus_by_annotator": (A,),
            "agree_consensus_by_annotator": (A,), "consensus_items_by_class_m": (K, A + 1),
            "consensus_agree_by_class_m": (K, A + 1), "consensus_pairs_by_class_m": (K, A + 1),
            "certain_by_class_m": (K, A + 1), "unchosen_by_class": (K,),
        }
        for name, shape in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape, dtype=np.int64))

    _ARRAYS = ("items_by_m", "unanimous_by_m", "class_counts", "coincidence_by_m", "pair_tables", "labels_by_annotator",
               "with_consensus_by_annotator", "agree_consensus_by_annotator",
               "consensus_items_by_class_m", "consensus_agree_by_class_m", "consensus_pairs_by_class_m",
               "certain_by_class_m", "unchosen_by_class")
    _SCALARS = ("n_items", "n_labels", "n_items_consensus_given", "n_items_no_consensus")

    # ---------------------------------------------------------------- accumulate

    def add(self, L: np.ndarray, consensus: Optional[np.ndarray] = None,
            certain: Optional[np.ndarray] = None) -> "AgreementStats":
        """Adds one batch in place and returns self.

        In: label matrix `L` (n, A) with this accumulator's K and A; optionally the
        batch's `consensus` codes (n,), -1 for none, to also count per-annotator and
        per-class agreement with the consensus (an annotator's own label is part of the
        consensus it is compared with); optionally `certain` (n,) bool, the items whose
        agreement with their consensus is 1 by construction (`consensus.agreement_certain`):
        they count as items of their class but not in its agreement figures.
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
            self.unchosen_by_class += np.bincount(codes[has][(agree == 0) & (m[has] > 0)], minlength=K)
            sure = np.zeros(int(has.sum()), bool) if certain is None else np.asarray(certain, bool)[has]
            self.certain_by_class_m += np.bincount(cell[sure], minlength=K * (A + 1)).reshape(K, A + 1)
            measured = ~sure
            self.consensus_agree_by_class_m += np.bincount(
                cell[measured], weights=agree[measured], minlength=K * (A + 1)).astype(np.int64).reshape(K, A + 1)
            pairs = (counts[has][measured] * (counts[has][measured] - 1)).sum(axis=1)
            self.consensus_pairs_by_class_m += np.bincount(
                cell[measured], weights=pairs, minlength=K * (A + 1)).astype(np.int64).reshape(K, A + 1)
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

    def class_kappas(self) -> List[Optional[float]]:
        """Per class (of the labels given, not of the consensus): Fleiss' kappa of the class
        against the rest, over items with >= 2 labels.

        Each label is recoded to "this class" or "another class" and `fleiss_kappa` is taken
        of that two-class table; with a constant number of labels per item this is Fleiss'
        (1971) per-category kappa, 1 - sum_i n_ij (m - n_ij) / (N m (m - 1) p_j q_j). All
        from the coincidence counts: over items with m labels, the labels of class j are the
        row sum / (m - 1), its agreeing ordered pairs the diagonal cell, and the pairs that
        agree on "another class" follow from both. None where a class is never or always
        given (chance agreement 1) or no item has two labels.
        """
        m = np.arange(self.n_annotators + 1, dtype=np.float64)
        co = self.coincidence_by_m.astype(np.float64)
        rows = co.sum(axis=2)                                    # (A+1, K): (m - 1) x labels of j
        same = np.diagonal(co, axis1=1, axis2=2)                 # (A+1, K): ordered pairs both j
        labels = rows / np.maximum(m - 1, 1)[:, None]            # labels of j on items with m labels
        items = self.items_by_m.astype(np.float64)[:, None]
        both_other = items * (m * (m - 1))[:, None] - 2 * (m - 1)[:, None] * labels + same
        agreeing = same + both_other                             # (A+1, K), per m
        pairable = self.n_pairable_items
        n_c = self._pairable_class_counts().astype(np.float64)
        total = n_c.sum()
        out: List[Optional[float]] = []
        for k in range(self.K):
            if pairable == 0 or total == 0:
                out.append(None)
                continue
            p_bar = float((agreeing[:, k] * self._weights(2)).sum()) / pairable
            p = n_c[k] / total
            p_e = p * p + (1 - p) * (1 - p)
            out.append(None if p_e == 1.0 else (p_bar - p_e) / (1.0 - p_e))
        return out

    def _distances(self, weights: str) -> np.ndarray:
        """(K, K) disagreement weights between class ranks: (c - k)^2 (quadratic) or |c - k|
        (linear), scaled to 1 at the largest distance; 1 - [c = k] for "nominal"."""
        r = np.arange(self.K, dtype=np.float64)
        if weights == "nominal":
            return 1.0 - np.eye(self.K)
        d = np.abs(r[:, None] - r[None, :])
        d = d * d if weights == "quadratic" else d
        return d / d.max() if self.K > 1 else d

    def weighted_kappa(self, weights: str = "quadratic") -> Optional[float]:
        """Fleiss' kappa with weights for ordinal classes (classes in rank order), over items
        with >= 2 labels: 1 - D_o / D_e, D_o the mean over items of the weighted disagreement
        of their annotator pairs, D_e that of two labels drawn from the pooled label shares.
        With "nominal" weights it is `fleiss_kappa`. With a constant number of labels per
        item, 1 - kappa_w = (1 - alpha) n / (n - 1), alpha Krippendorff's alpha with the same
        metric (quadratic: interval on the ranks) and n the labels counted. None when undefined.
        """
        pairable = self.n_pairable_items
        n_c = self._pairable_class_counts().astype(np.float64)
        total = n_c.sum()
        if pairable == 0 or total == 0:
            return None
        d = self._distances(weights)
        per_m = np.einsum("mck,ck->m", self.coincidence_by_m.astype(np.float64), d)
        observed = float((per_m * self._weights(2)).sum()) / pairable
        p = n_c / total
        expected = float(p @ d @ p)
        return None if expected == 0 else 1.0 - observed / expected

    def coincidence_matrix(self) -> np.ndarray:
        """Krippendorff's coincidence matrix (K, K) float: pairs within items weighted 1/(m-1)."""
        return np.tensordot(self._weights(1), self.coincidence_by_m.astype(np.float64), axes=1)

    def krippendorff_alpha(self, metric: str = "nominal") -> Optional[float]:
        """Krippendorff's alpha from the coincidence matrix, at the `metric`'s level:
        "nominal", "ordinal" (classes in rank order; the distance of two classes is the
        number of pairable values from one to the other, less half of each end's, squared)
        or "interval" (the squared difference of the ranks).

        alpha = 1 - (n-1) * sum o_ck d_ck / sum n_c n_k d_ck, with n the number of pairable
        values (labels on items with >= 2 labels). None when undefined.
        """
        o = self.coincidence_matrix()
        n_c = o.sum(axis=1)
        n = n_c.sum()
        if metric == "nominal":   # the original expression, kept as it was (same floating-point result)
            expected = n * n - (n_c * n_c).sum()
            if n <= 1 or expected == 0:
                return None
            observed = o.sum() - np.trace(o)
            return float(1.0 - (n - 1.0) * observed / expected)
        if metric == "ordinal":
            cum = np.concatenate([[0.0], np.cumsum(n_c)])
            lo = np.minimum.outer(np.arange(self.K), np.arange(self.K))
            hi = np.maximum.outer(np.arange(self.K), np.arange(self.K))
            d = (cum[hi + 1] - cum[lo] - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
        elif metric == "interval":
            r = np.arange(self.K, dtype=np.float64)
            d = (r[:, None] - r[None, :]) ** 2
        else:
            raise ValueError(f"metric must be nominal, ordinal or interval, got {metric!r}")
        expected = float(n_c @ d @ n_c)
        if n <= 1 or expected == 0:
            return None
        return float(1.0 - (n - 1.0) * float((o * d).sum()) / expected)

    def cohen_kappas(self, weights: Optional[str] = None) -> Dict[Tuple[int, int], Optional[float]]:
        """Cohen's kappa of each annotator pair (a, b), a < b, on items both labelled.

        Same formula as sklearn's cohen_kappa_score: unweighted, or with `weights`
        "quadratic" / "linear" on the class ranks (sklearn's `weights=` with
        `labels=` every class in order). None when the pair shares no item or chance
        agreement is 1 (kappa undefined).
        """
        out: Dict[Tuple[int, int], Optional[float]] = {}
        d = None if weights is None else self._distances(weights)
        for a, b in zip(*np.triu_indices(self.n_annotators, k=1)):
            t = self.pair_tables[a, b].astype(np.float64)
            n = t.sum()
            if n == 0:
                out[(int(a), int(b))] = None
                continue
            if d is not None:
                e = np.outer(t.sum(axis=1), t.sum(axis=0)) / n
                den = float((d * e).sum())
                out[(int(a), int(b))] = None if den == 0 else float(1.0 - (d * t).sum() / den)
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
        their labels equal to it; label_agreement pools the labels of those items. hlp is the
        per-class pairwise human-level performance: over the items whose consensus is the
        class and that have >= 2 labels, the mean share of their annotator pairs that agree
        (with each other, on any class): `hlp()` restricted to those items, so it needs no
        consensus to be right, only to pick the items (`pairable_items` of them). Needs
        `add(..., consensus=)`; also reports each class's share of all labels.

        These three leave out the items whose agreement is 1 by construction
        (`certain_items`, see `add(certain=)`): where every item of a class is such an item
        (two raters under majority with ties quarantined, unanimity), they are None ("n/a"),
        not a 1.0 that says nothing. `kappa` is Fleiss' kappa of the class against the rest
        (`class_kappas`: by the labels given, over every item with >= 2 labels);
        `unchosen_items` counts the class's items whose labels hold no vote for it.
        """
        m = np.arange(self.n_annotators + 1, dtype=np.float64)
        inv_m = np.where(m > 0, 1.0 / np.maximum(m, 1.0), 0.0)
        items = self.consensus_items_by_class_m.sum(axis=1)
        measured_by_m = self.consensus_items_by_class_m - self.certain_by_class_m
        measured = measured_by_m.sum(axis=1)
        labels = (measured_by_m * np.arange(self.n_annotators + 1)).sum(axis=1)
        agree = self.consensus_agree_by_class_m.sum(axis=1)
        mean_item = (self.consensus_agree_by_class_m * inv_m).sum(axis=1)
        pairable = measured_by_m[:, 2:].sum(axis=1)
        pair_share = (self.consensus_pairs_by_class_m * self._weights(2)).sum(axis=1)
        label_totals = self.class_counts
        kappas = self.class_kappas()
        rows = []
        for k in range(self.K):
            rows.append({
                "class": self.classes[k] if self.classes else k,
                "items": int(items[k]),
                "mean_item_agreement": _ratio(mean_item[k], measured[k]),
                "hlp": _ratio(pair_share[k], pairable[k]),
                "pairable_items": int(pairable[k]),
                "certain_items": int(self.certain_by_class_m[k].sum()),
                "labels_on_items": int(labels[k]),
                "label_agreement": _ratio(agree[k], labels[k]),
                "kappa": kappas[k],
                "labels_of_class": int(label_totals[k]),
                "label_share": _ratio(label_totals[k], self.n_labels),
                "unchosen_items": int(self.unchosen_by_class[k]),
            })
        return rows

    def to_dict(self, ordinal: bool = False) -> Dict[str, object]:
        """A JSON-ready summary; every figure comes with the number of items behind it.

        With `ordinal` (classes in rank order), also the quadratic-weighted kappas
        (`weighted_kappa` overall and per annotator pair) and Krippendorff's ordinal and
        interval alpha."""
        kappas = self.cohen_kappas()
        pairs = self.pair_counts()
        out = {
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
                          "labelled_items_without_consensus": self.n_items_no_consensus,
                          "unchosen_items": int(self.unchosen_by_class.sum())},
            "annotators_detail": self.annotator_agreement(),
            "classes_detail": self.class_agreement(),
        }
        if ordinal:
            pairable = self.n_pairable_items
            weighted = self.cohen_kappas("quadratic")
            out["weighted_kappa"] = {"value": self.weighted_kappa("quadratic"), "items": pairable,
                                     "weights": "quadratic"}
            out["krippendorff_alpha_ordinal"] = {"value": self.krippendorff_alpha("ordinal"), "items": pairable}
            out["krippendorff_alpha_interval"] = {"value": self.krippendorff_alpha("interval"), "items": pairable}
            for entry in out["cohen_kappa"]:
                entry["weighted_kappa"] = weighted[tuple(entry["pair"])]
        return out
