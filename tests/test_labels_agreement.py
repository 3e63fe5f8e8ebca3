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
