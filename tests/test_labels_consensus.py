"""Consensus maths (transforms/labels/consensus.py) against plain references: label encoding,
majority and unanimity against pandas, Dawid-Skene EM on planted truth and in distributed steps.

The real data is Rzhetsky et al. (2009) experiment 2: 15,521 sentences, 8 annotator
columns, every sentence labelled by exactly 3 of them with a value 1..5.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from transforms.labels import (DSStats, consensus_agreement, dawid_skene, ds_estep, ds_init_stats, ds_mstep,
                               ds_mstep_stats, encode_labels, majority, unanimous)

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "annotations_rzhetsky2009_e2.txt")
CLASSES = ["1", "2", "3", "4", "5"]
K = len(CLASSES)
TOL = 1e-9


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    """The file as integers (items x 8), -1 = not labelled."""
    if not os.path.exists(DATA):
        raise FileNotFoundError(f"{DATA}: the shared data sets must sit beside the repo (../shared/data)")
    frame = pd.read_csv(DATA, header=None, skipinitialspace=True)
    frame = frame.dropna(axis=1, how="all")  # every line ends with a comma
    return frame.to_numpy(np.int64)


@pytest.fixture(scope="module")
def L(raw) -> np.ndarray:
    """The label matrix, built through encode_labels from string columns."""
    columns = [pa.array(np.where(raw[:, j] >= 0, raw[:, j].astype(str), None)) for j in range(raw.shape[1])]
    return encode_labels(columns, CLASSES)


def test_shape_and_encoding(raw, L):
    assert raw.shape == (15521, 8)
    assert L.shape == (15521, 8)
    # encode_labels agrees with plain arithmetic on the codes (value v -> code v-1).
    assert np.array_equal(L, np.where(raw > 0, raw - 1, -1))
    assert ((L >= 0).sum(axis=1) == 3).all()


def test_encode_labels_nulls_and_unknowns():
    cols = [pa.array(["a", None, "zzz", "b"]), pa.chunked_array([["b", "b"], [None, "a"]])]
    assert encode_labels(cols, ["a", "b"]).tolist() == [[0, 1], [-1, 1], [-1, -1], [1, 0]]
    assert encode_labels([pa.array([1, 2, None])], ["1", "2"]).tolist() == [[0], [1], [-1]]


def _pandas_majority(L: np.ndarray, on_tie: str) -> np.ndarray:
    """Reference majority vote: long format, groupby, no numpy tricks."""
    n, A = L.shape
    long = pd.DataFrame({"item": np.repeat(np.arange(n), A), "col": np.tile(np.arange(A), n), "label": L.ravel()})
    long = long[long.label >= 0]
    g = long.groupby(["item", "label"]).agg(count=("col", "size"), first=("col", "min")).reset_index()
    g["top"] = g.groupby("item")["count"].transform("max")
    g = g[g["count"] == g["top"]]
    n_top = g.groupby("item")["label"].transform("size")
    if on_tie == "quarantine":
        winners = g[n_top == 1].set_index("item")["label"]
    else:
        winners = g.sort_values(["item", "first"]).groupby("item")["label"].first()
    return winners.reindex(np.arange(n), fill_value=-1).to_numpy(np.int64)


@pytest.mark.parametrize("on_tie", ["quarantine", "keep_first"])
def test_majority_matches_pandas(L, on_tie):
    got = majority(L, K, on_tie)
    assert np.array_equal(got.codes, _pandas_majority(L, on_tie))
    if on_tie == "quarantine":
        assert ((got.codes == -1) == got.tie).all()  # every item has labels, so -1 means tie
    assert np.allclose(consensus_agreement(L, got.codes)[got.codes >= 0], got.agreement[got.codes >= 0])


def test_majority_edge_cases():
    L = np.array([[-1, -1, -1], [2, 1, 1], [0, 1, -1], [1, 0, -1], [-1, 2, 0]])
    q = majority(L, 3, "quarantine")
    f = majority(L, 3, "keep_first")
    assert q.codes.tolist() == [-1, 1, -1, -1, -1]
    assert f.codes.tolist() == [-1, 1, 0, 1, 2]  # first occurrence in column order wins a tie
    assert q.reasons().tolist() == ["no_labels", "", "tie", "tie", "tie"]
    assert np.isnan(q.agreement[0]) and q.agreement[1] == pytest.approx(2 / 3)
    u = unanimous(np.array([[1, 1, -1], [1, 0, 1], [-1, -1, -1], [2, -1, -1]]), 3)
    assert u.codes.tolist() == [1, -1, -1, 2]
    assert u.reasons().tolist() == ["", "disagreement", "no_labels", ""]


def _planted(seed: int = 7, n: int = 3000, k: int = 3, accuracies=(0.9, 0.55, 0.55)):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    cols = []
    for acc in accuracies:
        wrong = (truth + rng.integers(1, k, n)) % k  # a uniformly random other class
        cols.append(np.where(rng.random(n) < acc, truth, wrong))
    return truth, np.stack(cols, axis=1)


def test_dawid_skene_beats_majority_on_planted_truth():
    truth, L = _planted()
    codes, post, pi, prior = dawid_skene(L, 3, iterations=20)
    ds_acc = (codes == truth).mean()
    mv_acc = (majority(L, 3, "keep_first").codes == truth).mean()
    print(f"\nDawid-Skene accuracy {ds_acc:.4f} vs majority (keep_first) {mv_acc:.4f}")
    assert ds_acc > mv_acc
    assert np.diag(pi[0]).min() > 0.8
    assert np.allclose(pi.sum(axis=2), 1.0) and np.allclose(post.sum(axis=1), 1.0)
    assert prior.shape == (3,) and prior.sum() == pytest.approx(1.0)


def _distributed_ds(L, cuts, order, iterations=5):
    """Dawid-Skene's steps as a pipeline runs them: statistics per batch, merged in `order`."""
    batches = [L[s:e] for s, e in zip(cuts, cuts[1:])]
    stats = DSStats.zeros(3, 3)
    for i in order:
        stats.merge(ds_init_stats(batches[i], 3))
    pi, prior = ds_mstep(stats)
    for _ in range(iterations):
        stats = DSStats.zeros(3, 3)
        for i in order:
            stats.merge(ds_mstep_stats(batches[i], ds_estep(batches[i], pi, prior), 3))
        pi, prior = ds_mstep(stats)
    return pi, prior, np.concatenate([ds_estep(b, pi, prior) for b in batches])


def test_dawid_skene_distributed_steps_equal_local_bit_for_bit():
    """The batching and the order in which partial statistics are merged (a runner with
    several workers merges in any order) change no bit of the parameters or posteriors:
    the published label_posterior is the same on every runner."""
    truth, L = _planted(seed=3, n=900)
    local_pi, local_prior = ds_mstep(ds_init_stats(L, 3))
    for _ in range(5):
        local_pi, local_prior = ds_mstep(ds_mstep_stats(L, ds_estep(L, local_pi, local_prior), 3))
    local_post = ds_estep(L, local_pi, local_prior)
    for cuts, order in (([0, 100, 450, 900], [0, 1, 2]), ([0, 100, 450, 900], [2, 0, 1]),
                        ([0, 7, 301, 302, 650, 900], [4, 3, 2, 1, 0])):
        pi, prior, post = _distributed_ds(L, cuts, order)
        assert np.array_equal(pi, local_pi) and np.array_equal(prior, local_prior)
        assert np.array_equal(post, local_post)


def test_float_sums_of_the_statistics_would_depend_on_the_merge_order():
    """Why DSStats sums integers: the same float partial sums added in another order differ
    in the last bits (the flaw the test above guards against)."""
    rng = np.random.default_rng(0)
    parts = rng.random(1000) * rng.choice([1e-3, 1.0, 1e3], 1000)
    forward, backward = 0.0, 0.0
    for x in parts:
        forward += x
    for x in parts[::-1]:
        backward += x
    assert forward != backward
