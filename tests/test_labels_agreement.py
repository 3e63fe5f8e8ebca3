"""Agreement maths (transforms/labels/agreement.py) against reference libraries: Fleiss'
kappa (statsmodels), Krippendorff's alpha (krippendorff), Cohen's kappa (scikit-learn),
HLP, unanimity and per-annotator figures, and merging in any order. On the Rzhetsky
matrix of tests/test_labels_consensus.py and on random matrices.
"""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from tests.test_labels_consensus import CLASSES, K, TOL, L, _pandas_majority, raw  # noqa: F401 (fixtures)
from transforms.labels import AgreementStats, consensus_agreement, encode_labels, label_counts, majority, unanimous


@pytest.fixture(scope="module")
def stats(L) -> AgreementStats:
    return AgreementStats(K, L.shape[1]).add(L, consensus=majority(L, K, "quarantine").codes)


def test_fleiss_kappa_matches_statsmodels(L, stats):
    expected = fleiss_kappa(label_counts(L, K), method="fleiss")
    assert stats.fleiss_kappa() == pytest.approx(expected, abs=TOL)


def test_krippendorff_alpha_matches_package(raw, stats):
    reliability = np.where(raw > 0, raw, np.nan).T.astype(np.float64)  # raters x units
    expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    assert stats.krippendorff_alpha() == pytest.approx(expected, abs=TOL)


def test_cohen_kappa_per_pair_matches_sklearn(L, stats):
    kappas = stats.cohen_kappas()
    assert len(kappas) == 28
    compared = 0
    for (a, b), kappa in kappas.items():
        both = (L[:, a] >= 0) & (L[:, b] >= 0)
        if not both.any():
            assert kappa is None
            continue
        assert kappa == pytest.approx(cohen_kappa_score(L[both, a], L[both, b]), abs=TOL)
        compared += 1
    assert compared > 0


def test_hlp_is_mean_pairwise_agreement(L, stats):
    # Independent reference: per item, agreeing pairs among its 3 labels.
    counts = label_counts(L, K)
    n = counts.sum(axis=1)
    per_item = (counts * (counts - 1)).sum(axis=1) / (n * (n - 1))
    assert stats.hlp() == pytest.approx(per_item.mean(), abs=TOL)
    # Constant raters per item: pooled and item-mean agree.
    assert stats.pairwise_agreement_pooled() == pytest.approx(stats.hlp(), abs=TOL)


def test_unanimous_share_matches_pandas(L, stats):
    long = pd.DataFrame({"item": np.repeat(np.arange(len(L)), L.shape[1]), "label": L.ravel()})
    long = long[long.label >= 0]
    per_item = long.groupby("item")["label"].agg(["size", "nunique"])
    per_item = per_item[per_item["size"] >= 2]
    expected = float((per_item["nunique"] == 1).mean())
    print(f"\nunanimous share: {stats.unanimous_share():.6f} of {stats.n_pairable_items} items")
    assert stats.unanimous_share() == pytest.approx(expected, abs=TOL)
    assert 0.40 < stats.unanimous_share() < 0.42
    assert (unanimous(L, K).codes >= 0).mean() == pytest.approx(expected, abs=TOL)


def test_counts_and_consensus_figures(L, stats):
    assert (stats.n_items, stats.n_labelled_items, stats.n_labels) == (15521, 15521, 3 * 15521)
    codes = majority(L, K, "quarantine").codes
    rows = stats.annotator_agreement()
    for a, row in enumerate(rows):
        mine = (L[:, a] >= 0) & (codes >= 0)
        assert row["labels"] == int((L[:, a] >= 0).sum())
        assert row["items_with_consensus"] == int(mine.sum())
        assert row["agreement_with_consensus"] == pytest.approx((L[mine, a] == codes[mine]).mean(), abs=TOL)
    agreement = consensus_agreement(L, codes)
    for k, row in enumerate(stats.class_agreement()):
        assert row["items"] == int((codes == k).sum())
        if row["items"]:
            assert row["mean_item_agreement"] == pytest.approx(agreement[codes == k].mean(), abs=TOL)
    summary = stats.to_dict()
    assert summary["fleiss_kappa"]["items"] == 15521
    assert summary["consensus"]["labelled_items_without_consensus"] == int((codes < 0).sum())


def test_merged_batches_equal_one_batch(L, stats):
    codes = majority(L, K, "quarantine").codes
    cuts = [0, 17, 1000, 1001, 4500, 9000, 15000, len(L)]  # 7 uneven batches
    parts = [AgreementStats(K, L.shape[1]).add(L[s:e], consensus=codes[s:e]) for s, e in zip(cuts, cuts[1:])]
    # Merge in a tree rather than left-to-right, as a combiner would.
    left = parts[0].merge(parts[1]).merge(parts[2])
    right = parts[6].merge(parts[5]).merge(parts[4]).merge(parts[3])
    merged = AgreementStats(K, L.shape[1]).merge(right).merge(left)
    assert merged.counts_equal(stats)
    assert merged.to_dict() == stats.to_dict()


def test_normalising_text_raises_agreement():
    # Three transcribers who agree on the words and differ only in punctuation style.
    a = pa.array(["yes, please", "well... ok", "no, thanks", "hi there", "so... what"])
    b = pa.array(["yes... please", "well, ok", "no, thanks", "hi there", "so, what"])
    c = pa.array(["yes, please", "well, ok", "no... thanks", "hi there", "so, what"])
    normalise = {"...": ","}

    def norm(col: pa.Array) -> pa.Array:
        for old, new in normalise.items():
            col = pc.replace_substring(col, old, new)
        return col

    raw_classes = sorted(set(a.to_pylist() + b.to_pylist() + c.to_pylist()))
    before = AgreementStats(len(raw_classes), 3).add(encode_labels([a, b, c], raw_classes))
    columns = [norm(x) for x in (a, b, c)]
    clean_classes = sorted(set(sum((x.to_pylist() for x in columns), [])))
    after = AgreementStats(len(clean_classes), 3).add(encode_labels(columns, clean_classes))
    assert before.hlp() < 1.0 and before.unanimous_share() < 1.0
    assert after.hlp() == 1.0 and after.unanimous_share() == 1.0
    assert after.hlp() > before.hlp()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), A=st.integers(2, 6), k=st.integers(2, 4),
       missing=st.floats(0.0, 0.8), cut=st.floats(0.0, 1.0))
def test_random_matrices_with_varying_raters(seed, n, A, k, missing, cut):
    rng = np.random.default_rng(seed)
    L = np.where(rng.random((n, A)) < missing, -1, rng.integers(0, k, (n, A)))
    codes = majority(L, k, "keep_first").codes
    whole = AgreementStats(k, A).add(L, consensus=codes)
    c = int(cut * n)
    parts = AgreementStats(k, A).add(L[c:], consensus=codes[c:]).merge(AgreementStats(k, A).add(L[:c], consensus=codes[:c]))
    assert parts.counts_equal(whole) and parts.to_dict() == whole.to_dict()
    assert np.array_equal(codes, _pandas_majority(L, "keep_first"))
    assert np.array_equal(majority(L, k, "quarantine").codes, _pandas_majority(L, "quarantine"))

    alpha = whole.krippendorff_alpha()
    reliability = np.where(L >= 0, L, np.nan).T.astype(np.float64)
    pairable = (L >= 0).sum(axis=1) >= 2
    pairable_values = L[pairable][L[pairable] >= 0]
    if alpha is not None:
        expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
        assert alpha == pytest.approx(expected, abs=TOL)
    else:
        assert len(np.unique(pairable_values)) < 2
    for (a, b), kappa in whole.cohen_kappas().items():
        both = (L[:, a] >= 0) & (L[:, b] >= 0)
        if kappa is not None:
            assert kappa == pytest.approx(cohen_kappa_score(L[both, a], L[both, b]), abs=TOL)
        else:
            assert not both.any() or len(np.unique(np.r_[L[both, a], L[both, b]])) == 1


def _per_class_hlp_by_hand(L: np.ndarray, codes: np.ndarray, K: int) -> dict:
    """Per consensus class: over its items with >= 2 labels, the mean share of their
    annotator pairs (itertools.combinations of the present labels) that agree."""
    shares = {k: [] for k in range(K)}
    for row, c in zip(L, codes):
        present = [v for v in row if v >= 0]
        if c < 0 or len(present) < 2:
            continue
        pairs = list(itertools.combinations(present, 2))
        shares[int(c)].append(sum(a == b for a, b in pairs) / len(pairs))
    return {k: (float(np.mean(v)) if v else None, len(v)) for k, v in shares.items()}


@pytest.mark.parametrize("seed", [None, 3, 4])
def test_per_class_hlp_is_pairwise_agreement_within_the_class(L, seed):
    if seed is not None:   # random matrices with missing labels: 0..5 labels per item
        rng = np.random.default_rng(seed)
        L = np.where(rng.random((400, 5)) < 0.35, -1, rng.choice(K, size=(400, 5), p=[0.6, 0.25, 0.1, 0.05, 0.0]))
    codes = majority(L, K, "quarantine").codes
    rows = {r["class"]: r for r in AgreementStats(K, L.shape[1]).add(L, codes).class_agreement()}
    expected = _per_class_hlp_by_hand(L, codes, K)
    assert sum(n for _, n in expected.values()) > 50
    for k, (value, n) in expected.items():
        assert rows[k]["pairable_items"] == n
        if value is None:
            assert rows[k]["hlp"] is None
        else:
            assert rows[k]["hlp"] == pytest.approx(value, abs=1e-12)


# ---- per-class kappa, ordinal classes, agreement certain by construction ---------------------

def _binarized(L: np.ndarray, k: int) -> np.ndarray:
    """Class k against the rest: 0 where the label is k, 1 where it is another class."""
    return np.where(L < 0, -1, np.where(L == k, 0, 1))


def test_per_class_kappa_is_fleiss_category_kappa(L, stats):
    """Constant raters (3 per sentence): statsmodels' Fleiss kappa of the two-column table
    (class, the rest), and Fleiss' (1971) per-category formula by hand."""
    counts = label_counts(L, K)
    m = counts.sum(axis=1)
    n = len(L)
    got = stats.class_kappas()
    rows = {r["class"]: r for r in stats.class_agreement()}
    for k in range(K):
        table = np.stack([counts[:, k], m - counts[:, k]], axis=1)
        assert got[k] == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=TOL)
        p = counts[:, k].sum() / m.sum()
        by_hand = 1 - (counts[:, k] * (m - counts[:, k])).sum() / (n * 3 * 2 * p * (1 - p))
        assert got[k] == pytest.approx(by_hand, abs=TOL)
        assert rows[k]["kappa"] == got[k]
    print("\nRzhetsky per-class kappa (one vs rest): " + ", ".join(f"{CLASSES[k]} {v:.4f}" for k, v in enumerate(got)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), A=st.integers(2, 6), k=st.integers(2, 5),
       missing=st.floats(0.0, 0.8))
def test_per_class_kappa_with_varying_raters_is_the_binary_fleiss_kappa(seed, n, A, k, missing):
    rng = np.random.default_rng(seed)
    L = np.where(rng.random((n, A)) < missing, -1, rng.integers(0, k, (n, A)))
    got = AgreementStats(k, A).add(L).class_kappas()
    for c in range(k):
        assert got[c] == pytest.approx(AgreementStats(2, A).add(_binarized(L, c)).fleiss_kappa(), abs=1e-9, nan_ok=False) \
            if got[c] is not None else AgreementStats(2, A).add(_binarized(L, c)).fleiss_kappa() is None


@pytest.mark.parametrize("weights", ["quadratic", "linear"])
def test_weighted_cohen_kappa_per_pair_matches_sklearn(L, stats, weights):
    compared = 0
    for (a, b), kappa in stats.cohen_kappas(weights).items():
        both = (L[:, a] >= 0) & (L[:, b] >= 0)
        if not both.any():
            assert kappa is None
            continue
        ref = cohen_kappa_score(L[both, a], L[both, b], labels=list(range(K)), weights=weights)
        assert kappa == pytest.approx(ref, abs=TOL)
        compared += 1
    assert compared >= 16


@pytest.mark.parametrize("metric", ["ordinal", "interval"])
def test_ordinal_and_interval_alpha_match_krippendorff(raw, stats, metric):
    reliability = np.where(raw > 0, raw, np.nan).T.astype(np.float64)
    expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement=metric)
    assert stats.krippendorff_alpha(metric) == pytest.approx(expected, abs=TOL)
    print(f"\nRzhetsky {metric} alpha {expected:.6f} (nominal {stats.krippendorff_alpha():.6f})")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), A=st.integers(2, 6), k=st.integers(3, 5),
       missing=st.floats(0.0, 0.7))
def test_ordinal_alpha_and_weighted_pairs_on_random_matrices(seed, n, A, k, missing):
    rng = np.random.default_rng(seed)
    L = np.where(rng.random((n, A)) < missing, -1, rng.integers(0, k, (n, A)))
    s = AgreementStats(k, A).add(L)
    reliability = np.where(L >= 0, L, np.nan).T.astype(np.float64)
    pairable = L[(L >= 0).sum(axis=1) >= 2]
    for metric in ("ordinal", "interval"):
        got = s.krippendorff_alpha(metric)
        if got is None:
            assert len(np.unique(pairable[pairable >= 0])) < 2
        else:
            assert got == pytest.approx(krippendorff.alpha(reliability_data=reliability, level_of_measurement=metric),
                                        abs=1e-9)
    for (a, b), kappa in s.cohen_kappas("quadratic").items():
        both = (L[:, a] >= 0) & (L[:, b] >= 0)
        if kappa is not None:
            assert kappa == pytest.approx(cohen_kappa_score(L[both, a], L[both, b], labels=list(range(k)),
                                                            weights="quadratic"), abs=1e-9)


def test_weighted_fleiss_kappa_is_tied_to_interval_alpha(raw, L, stats):
    """With nominal weights it is Fleiss' kappa; with quadratic weights and a constant number of
    labels per item, 1 - kappa_w = (1 - alpha_interval) n / (n - 1) exactly (alpha from the
    krippendorff package, n the labels counted)."""
    assert stats.weighted_kappa("nominal") == pytest.approx(stats.fleiss_kappa(), abs=TOL)
    alpha = krippendorff.alpha(reliability_data=np.where(raw > 0, raw, np.nan).T.astype(np.float64),
                               level_of_measurement="interval")
    n = int((L >= 0).sum())
    kappa_w = stats.weighted_kappa("quadratic")
    assert 1 - kappa_w == pytest.approx((1 - alpha) * n / (n - 1), abs=TOL)
    print(f"\nRzhetsky: Fleiss kappa {stats.fleiss_kappa():.4f}, quadratic-weighted {kappa_w:.4f}")


def test_ordinal_report_fields(L):
    d = AgreementStats(K, L.shape[1]).add(L, majority(L, K, "quarantine").codes).to_dict(ordinal=True)
    assert d["weighted_kappa"]["weights"] == "quadratic" and d["weighted_kappa"]["items"] == 15521
    assert {"krippendorff_alpha_ordinal", "krippendorff_alpha_interval"} <= set(d)
    assert all("weighted_kappa" in e for e in d["cohen_kappa"])
    assert "weighted_kappa" not in AgreementStats(K, L.shape[1]).add(L).to_dict()


def test_per_class_agreement_is_na_where_it_is_one_by_construction():
    """Two raters, majority, ties quarantined: an item has a consensus only when both agree,
    so the per-class agreement of those items is 1.0 whatever the raters do: n/a (None).
    With three raters per item it is measured; with keep_first, two disagreeing raters
    still get a consensus, so it is measured too."""
    from transforms.labels import agreement_certain

    rng = np.random.default_rng(0)
    two = rng.integers(0, 3, (300, 2))
    for on_tie, measured in (("quarantine", False), ("keep_first", True)):
        result = majority(two, 3, on_tie)
        certain = agreement_certain("majority", on_tie, result.n_labels, result.codes)
        rows = AgreementStats(3, 2).add(two, result.codes, certain).class_agreement()
        for r in rows:
            if measured:
                assert r["hlp"] is not None and r["hlp"] < 1 and r["certain_items"] == 0
            else:
                assert r["hlp"] is None and r["mean_item_agreement"] is None and r["label_agreement"] is None
                assert r["certain_items"] == r["items"] > 0 and r["kappa"] is not None
    # Without `certain`, the old figure: exactly 1.0 for every class
    plain = AgreementStats(3, 2).add(two, majority(two, 3, "quarantine").codes).class_agreement()
    assert all(r["hlp"] == 1.0 for r in plain)
    # Mixed: the items with three labels are measured, those with two are left out
    three = np.c_[two, rng.integers(0, 3, 300)]
    three[:100, 2] = -1
    result = majority(three, 3, "quarantine")
    certain = agreement_certain("majority", "quarantine", result.n_labels, result.codes)
    rows = AgreementStats(3, 3).add(three, result.codes, certain).class_agreement()
    expected = _per_class_hlp_by_hand(three[100:], result.codes[100:], 3)
    for k, r in enumerate(rows):
        assert r["hlp"] == pytest.approx(expected[k][0], abs=1e-12) and r["pairable_items"] == expected[k][1]
        assert r["certain_items"] == int(((result.codes[:100] == k)).sum())
    # Unanimity: every item with a consensus agrees by definition
    result = unanimous(three, 3)
    certain = agreement_certain("unanimous", "quarantine", result.n_labels, result.codes)
    assert all(r["hlp"] is None for r in AgreementStats(3, 3).add(three, result.codes, certain).class_agreement())


def test_unchosen_consensus_is_counted():
    L = np.array([[0, 0, 1], [1, 1, -1], [2, 2, 2], [0, 1, -1]])
    codes = np.array([0, 2, 2, -1])         # item 1's consensus (2) is a class neither of its raters chose
    stats = AgreementStats(3, 3).add(L, codes)
    assert [r["unchosen_items"] for r in stats.class_agreement()] == [0, 0, 1]
    assert stats.to_dict()["consensus"]["unchosen_items"] == 1


def test_agreement_report_per_slice_with_ordinal_classes(L):
    from transforms.labels import LabelsSpec, agreement_report

    codes = majority(L, K, "quarantine").codes
    stats = {"": AgreementStats(K, 8).add(L, codes), '["half", "a"]': AgreementStats(K, 8).add(L[:5000], codes[:5000])}
    ordinal = agreement_report(stats, LabelsSpec(annotators=(), label="y", classes=tuple(CLASSES), ordinal=True))
    row = ordinal["slices_by_agreement"]["half"][0]
    assert row["weighted_kappa"] == pytest.approx(stats['["half", "a"]'].weighted_kappa("quadratic"), abs=TOL)
    assert row["krippendorff_alpha_ordinal"] == pytest.approx(stats['["half", "a"]'].krippendorff_alpha("ordinal"))
    assert "weighted_kappa" in ordinal["overall"]
    nominal = agreement_report(stats, LabelsSpec(annotators=(), label="y", classes=tuple(CLASSES)))
    assert "weighted_kappa" not in nominal["slices_by_agreement"]["half"][0] and "weighted_kappa" not in nominal["overall"]
