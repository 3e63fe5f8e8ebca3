"""The labels stage end to end: consensus and agreement in the pipeline, checked against
statsmodels, krippendorff, scikit-learn and pandas on the real multi-annotator data."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config, parse_config
from pipeline.run import run
from tests.conftest import TESTS, shared

ANNOTATORS = [f"a{i}" for i in range(8)]


def _run(cfg, tmp):
    summary = run(cfg, output=str(tmp), store=str(tmp / "m.sqlite"))
    with open(os.path.join(summary["output"], "report.json")) as f:
        return summary, json.load(f)


@pytest.fixture(scope="module")
def rz(tmp_path_factory):
    """The Rzhetsky run, its classes declared ordinal (ranks 1..5: the figures of the nominal
    tests below do not change, the ordinal ones are added)."""
    tmp = tmp_path_factory.mktemp("rz")
    cfg = load_config(os.path.join(TESTS, "configs", "rzhetsky.yaml"))
    cfg.labels.classes, cfg.labels.ordinal = ["1", "2", "3", "4", "5"], True
    summary, report = _run(cfg, tmp)
    matrix = pd.read_csv(shared("annotations_rzhetsky2009_e2.txt"), header=None, skipinitialspace=True)
    matrix = matrix.iloc[:, :8].to_numpy()
    return summary, report, matrix


def test_agreement_equals_the_reference_packages(rz):
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import fleiss_kappa

    _, report, m = rz
    overall = report["labels"]["overall"]
    table = np.stack([(m == k).sum(axis=1) for k in range(1, 6)], axis=1)
    assert abs(overall["fleiss_kappa"]["value"] - fleiss_kappa(table)) < 1e-9
    alpha = krippendorff.alpha(reliability_data=np.where(m < 0, np.nan, m).T.astype(float),
                               level_of_measurement="nominal")
    assert abs(overall["krippendorff_alpha_nominal"]["value"] - alpha) < 1e-9
    classes = overall["classes"]
    checked = 0
    for entry in overall["cohen_kappa"]:
        a, b = entry["pair"]
        both = (m[:, a] >= 0) & (m[:, b] >= 0)
        if both.sum() == 0:
            assert entry["kappa"] is None
            continue
        ref = cohen_kappa_score(m[both, a], m[both, b])
        assert abs(entry["kappa"] - ref) < 1e-9 and entry["items"] == int(both.sum())
        checked += 1
    assert checked >= 16 and classes == ["1", "2", "3", "4", "5"]
    unanimous = overall["unanimous_share"]["value"]
    ref_unanimous = np.mean([len(set(r[r >= 0])) == 1 for r in m])
    assert abs(unanimous - ref_unanimous) < 1e-12
    print(f"\nRzhetsky 2009: items {overall['items']}, HLP {overall['hlp']['value']:.4f}, "
          f"Fleiss {overall['fleiss_kappa']['value']:.6f}, alpha {alpha:.6f}, unanimous {unanimous:.1%}")
    for row in report["labels"]["annotators_by_agreement"]:
        print(f"  {row['annotator']}: agreement with consensus {row['agreement_with_consensus']:.4f} "
              f"over {row['items_with_consensus']} items, with other annotators "
              f"{row['pairwise_agreement_with_others']:.4f}")


def test_ordinal_labels_get_weighted_kappa_and_ordinal_alpha(rz):
    """labels.ordinal: quadratic-weighted Cohen's kappa per pair (scikit-learn's), Krippendorff's
    ordinal and interval alpha (the krippendorff package's), per slice too; the per-class
    kappa is Fleiss' of the class against the rest (statsmodels')."""
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import fleiss_kappa

    _, report, m = rz
    overall = report["labels"]["overall"]
    reliability = np.where(m < 0, np.nan, m).T.astype(float)
    for metric in ("ordinal", "interval"):
        expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement=metric)
        assert abs(overall[f"krippendorff_alpha_{metric}"]["value"] - expected) < 1e-9
    assert overall["weighted_kappa"]["weights"] == "quadratic"
    checked = 0
    for entry in overall["cohen_kappa"]:
        a, b = entry["pair"]
        both = (m[:, a] >= 0) & (m[:, b] >= 0)
        if both.sum():
            ref = cohen_kappa_score(m[both, a], m[both, b], labels=[1, 2, 3, 4, 5], weights="quadratic")
            assert abs(entry["weighted_kappa"] - ref) < 1e-9
            checked += 1
    assert checked >= 16
    counts = np.stack([(m == k).sum(axis=1) for k in range(1, 6)], axis=1)
    for row in report["labels"]["classes_by_agreement"]:
        k = int(row["class"]) - 1
        assert abs(row["kappa"] - fleiss_kappa(np.stack([counts[:, k], 3 - counts[:, k]], axis=1))) < 1e-9
        assert row["certain_items"] == 0 and row["hlp"] is not None     # three labels each: all measured
    assert all("weighted_kappa" in r for rows in report["labels"]["slices_by_agreement"].values() for r in rows) \
        or not report["labels"]["slices_by_agreement"]
    print(f"\nRzhetsky, ordinal: weighted kappa {overall['weighted_kappa']['value']:.4f}, ordinal alpha "
          f"{overall['krippendorff_alpha_ordinal']['value']:.4f}, Fleiss {overall['fleiss_kappa']['value']:.4f}")


def test_majority_vote_matches_pandas_exactly(rz):
    summary, report, m = rz
    frame = pd.DataFrame(np.where(m < 0, np.nan, m))
    counts = frame.apply(lambda r: r.value_counts(), axis=1).fillna(0)
    top = counts.max(axis=1)
    tied = (counts.eq(top, axis=0)).sum(axis=1) > 1
    expected = counts.idxmax(axis=1).astype(int).astype(str)
    out = summary["output"]
    rows = pd.concat([pq.read_table(os.path.join(out, "raw", s)).to_pandas() for s in ("train", "test")])
    got = rows.set_index("_row")["consensus"].sort_index()
    assert set(got.index) == set(np.flatnonzero(~tied.to_numpy()) + 1)      # _row is the 1-based line
    assert (got == expected.iloc[got.index - 1].to_numpy()).all()
    q = pq.read_table(os.path.join(out, "quarantine")).to_pandas()
    assert sorted(q["_row"]) == sorted(np.flatnonzero(tied.to_numpy()) + 1)
    assert set(q["reason"]) == {"label_tie"} and set(q["stage"]) == {"labels"}
    assert ((rows["label_agreement"] > 0.5) & (rows["label_count"] == 3)).all()
    assert report["labels"]["annotators_by_agreement"][0]["agreement_with_consensus"] <= \
        report["labels"]["annotators_by_agreement"][-1]["agreement_with_consensus"]


def _write_wide(path, rows, annotators):
    pd.DataFrame(rows).to_csv(path, index=False)
    return {"name": "synthetic", "inputs": [{"path": str(path), "format": "csv"}],
            "schema": {"id": "item", "label": "label", "columns": {"item": "string"}, "metadata": ["slice"]},
            "labels": {"annotators": annotators, "slices": ["slice"]},
            "split": {"fractions": {"train": 0.5, "test": 0.5}}, "output": {"shards": 1}}


def test_dawid_skene_beats_majority_on_planted_truth(tmp_path):
    rng = np.random.default_rng(11)
    n, K = 2000, 3
    truth = rng.integers(0, K, n)

    def noisy(acc):
        wrong = rng.random(n) > acc
        return np.where(wrong, (truth + rng.integers(1, K, n)) % K, truth)

    labels = {"good": noisy(0.9), "noisy1": noisy(0.5), "noisy2": noisy(0.5)}
    rows = {"item": [f"i{k}" for k in range(n)], "slice": ["s"] * n, **{a: [f"c{v}" for v in x] for a, x in labels.items()}}
    base = _write_wide(tmp_path / "ds.csv", rows, list(labels))
    results, got, reports, outs = {}, {}, {}, {}
    for method in ("majority", "dawid_skene"):
        data = json.loads(json.dumps(base))
        data["labels"].update(consensus=method, on_tie="keep_first", iterations=15)
        summary, reports[method] = _run(parse_config(data, base_dir=str(tmp_path)), tmp_path / method)
        out = pd.concat([pq.read_table(os.path.join(summary["output"], "raw", s)).to_pandas() for s in ("train", "test")])
        outs[method] = out
        got[method] = out.set_index("item")["label"].reindex([f"i{k}" for k in range(n)])
        results[method] = float((got[method].to_numpy() == np.array([f"c{t}" for t in truth])).mean())
    print(f"\nplanted truth: majority {results['majority']:.3f}, Dawid-Skene {results['dawid_skene']:.3f}")
    assert results["dawid_skene"] > results["majority"] + 0.05
    assert "dawid_skene" not in reports["majority"]["labels"]
    # the posterior of each consensus rides along, with Dawid-Skene only
    assert "label_posterior" not in outs["majority"].columns
    post = outs["dawid_skene"]["label_posterior"]
    assert post.notna().all() and ((post > 1 / K) & (post <= 1)).all()
    unchosen = int(((outs["dawid_skene"]["label_agreement"] == 0) & (outs["dawid_skene"]["label_count"] > 0)).sum())
    assert reports["dawid_skene"]["labels"]["dawid_skene"]["unchosen_items"] == unchosen
    assert reports["dawid_skene"]["labels"]["overall"]["consensus"]["unchosen_items"] >= unchosen
    _dawid_skene_matrices_match_crowdkit(reports["dawid_skene"], rows, list(labels), got["dawid_skene"], iterations=15)


def _dawid_skene_matrices_match_crowdkit(report, rows, annotators, consensus, iterations):
    """The report's confusion matrices are crowd-kit's DawidSkene's on the same labels (its
    EM has the same steps: majority-vote soft counts, then E and M alternately; it clips
    where we add a 0.01 pseudo-count, hence the tolerance), and so are the labels."""
    from crowdkit.aggregation import DawidSkene

    from pipeline.html_report import render_html

    long = pd.DataFrame(rows).melt(id_vars=["item"], value_vars=annotators, var_name="worker", value_name="label")
    ds = DawidSkene(n_iter=iterations, tol=0.0)
    labels = ds.fit_predict(long.rename(columns={"item": "task"}))
    section = report["labels"]["dawid_skene"]
    classes = section["classes"]
    assert set(section["confusion"]) == set(annotators)
    for worker in annotators:
        matrix = np.array(section["confusion"][worker]["matrix"])
        assert matrix.shape == (len(classes), len(classes))
        assert np.allclose(matrix.sum(axis=1), 1.0) and (matrix >= 0).all()      # rows: P(given | true)
        ref = ds.errors_.loc[worker].reindex(index=classes, columns=classes).fillna(0.0)   # [given, true]
        np.testing.assert_allclose(matrix, ref.to_numpy().T, atol=2e-3)
    assert float((labels.reindex(consensus.index) == consensus).mean()) > 0.995
    np.testing.assert_allclose([section["prior"][c] for c in classes], ds.priors_.reindex(classes), atol=2e-3)
    page = render_html(report)
    part = page[page.index("Dawid-Skene confusion matrices"):]
    assert part.count("<svg") >= len(annotators) and all(f">{a}<" in part for a in annotators)


def test_normalising_punctuation_raises_hlp_on_transcripts(tmp_path):
    sentences = ["turn left at the light", "call me back later", "the meeting is at noon", "send the report",
                 "where is the station", "i will be late today"]
    rng = np.random.default_rng(3)
    rows = {"item": [], "slice": []} | {a: [] for a in ("t1", "t2", "t3")}
    for i in range(120):
        words = sentences[i % len(sentences)].split()
        cut = 1 + i % (len(words) - 1)
        for a in ("t1", "t2", "t3"):
            sep = "..." if rng.random() < 0.5 else ","
            rows[a].append(" ".join(words[:cut]) + sep + " " + " ".join(words[cut:]))
        rows["item"].append(f"u{i}")
        rows["slice"].append("speaker-a" if i % 2 else "speaker-b")
    base = _write_wide(tmp_path / "tr.csv", rows, ["t1", "t2", "t3"])
    base["labels"]["on_tie"] = "keep_first"
    _, before = _run(parse_config(base, base_dir=str(tmp_path)), tmp_path / "before")
    base["labels"]["replace"] = {"...": ","}
    _, after = _run(parse_config(base, base_dir=str(tmp_path)), tmp_path / "after")
    hlp_before = before["labels"]["overall"]["hlp"]["value"]
    hlp_after = after["labels"]["overall"]["hlp"]["value"]
    print(f"\ntranscripts: HLP {hlp_before:.3f} before normalising '...' to ',', {hlp_after:.3f} after")
    assert hlp_before < 0.8 and hlp_after == 1.0
    slices = before["labels"]["slices_by_agreement"]["slice"]
    assert [r["hlp"] for r in slices] == sorted(r["hlp"] for r in slices) and {r["items"] for r in slices} == {60}


def test_long_form_annotations_joined_by_id(tmp_path):
    """The Rzhetsky matrix as a long annotations file (item, annotator, label) plus an
    examples file: the same figures as the wide form, plus orphans and repeats counted."""
    m = pd.read_csv(shared("annotations_rzhetsky2009_e2.txt"), header=None, skipinitialspace=True).iloc[:3000, :8]
    items = pd.DataFrame({"item": [f"i{k}" for k in range(len(m))], "block": [f"b{k % 3}" for k in range(len(m))]})
    items.to_csv(tmp_path / "items.csv", index=False)
    long = m.assign(item=items["item"]).melt(id_vars="item", var_name="annotator", value_name="label")
    long = long[long["label"] >= 0].sample(frac=1.0, random_state=0)          # any order
    long["annotator"] = "a" + long["annotator"].astype(str)
    extra = pd.DataFrame({"item": ["i0", "ghost"], "annotator": [long[long["item"] == "i0"]["annotator"].iloc[0], "a1"],
                          "label": [9, 3]})                                  # a repeat, and an orphan
    pd.concat([long, extra]).to_csv(tmp_path / "ann.csv", index=False)
    cfg = {"name": "long", "inputs": [{"path": str(tmp_path / "items.csv"), "format": "csv"}],
           "schema": {"id": "item", "label": "label", "columns": {"item": "string"}, "metadata": ["block"]},
           "labels": {"annotations": {"path": str(tmp_path / "ann.csv"), "id": "item", "annotator": "annotator",
                                      "label": "label", "source": "long form"}, "slices": ["block"]},
           "split": {"fractions": {"train": 0.8, "test": 0.2}}, "output": {"shards": 1}}
    summary, report = _run(parse_config(cfg), tmp_path / "o")
    from statsmodels.stats.inter_rater import fleiss_kappa

    mm = m.to_numpy()
    table = np.stack([(mm == k).sum(axis=1) for k in range(1, 6)], axis=1)
    overall = report["labels"]["overall"]
    assert abs(overall["fleiss_kappa"]["value"] - fleiss_kappa(table)) < 1e-9
    assert report["labels"]["annotations"]["orphan"] == 1 and report["labels"]["annotations"]["repeated"] == 1
    rows = summary["rows"]
    assert rows["input"] == 3000 == rows["train"] + rows["test"] + rows["quarantined"]
    out = pq.read_table(os.path.join(summary["output"], "raw", "train")).to_pandas()
    first = json.loads(out["annotations"].iloc[0])
    assert 2 <= len(first) <= 3 and set(out.columns) >= {"label", "label_agreement", "annotations", "block"}
    assert "_label_matrix" not in out.columns
