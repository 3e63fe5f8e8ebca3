"""Cleaning on real files: SMS duplicates and spam, Chicago taxi missing values, a broken line in ten."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import load_config, parse_config
from pipeline.run import run
from tests.conftest import TESTS, shared

SPAM_RULES = [
    {"column": "text", "not_matches": r"(?i)https?://|www\.|\.com\b|£|\$", "reason": "spam"},
    {"column": "text", "not_matches": r"(?i)\b(free|win|won|winner|prize|claim|urgent|cash|award|txt|reply|"
                                      r"stop|ringtone|mobile|offer|guaranteed)\b", "reason": "spam"},
    {"column": "text", "not_matches": r"\b\d{5,}\b", "reason": "spam"},
]


def _run(config_path, tmp_path, edit=None):
    cfg = load_config(config_path)
    if edit:
        data = yaml.safe_load(open(config_path))
        edit(data)
        cfg = parse_config(data, base_dir=os.path.dirname(config_path))
    summary = run(cfg, output=str(tmp_path), store=str(tmp_path / "m.sqlite"))
    return summary, summary["output"]


def _sms_frame():
    return pd.read_csv(shared("sms_spam_collection.tsv"), sep="\t", header=None, quoting=csv.QUOTE_NONE,
                       names=["label", "text"], keep_default_na=False)


def test_sms_duplicates_with_normalisation(tmp_path):
    summary, out = _run(os.path.join(TESTS, "configs", "sms.yaml"), tmp_path)
    sms = _sms_frame()
    exact = int(sms["text"].duplicated().sum())
    normalised = sms["text"].str.replace(r"\s+", " ", regex=True).str.strip().str.lower()
    expected = int(normalised.duplicated().sum())
    assert exact == 328
    assert summary["rows"]["duplicates"] == expected >= exact
    conflicts = normalised[normalised.duplicated(keep=False)]
    n_conflicting_keys = int(sms.assign(n=normalised).loc[conflicts.index].groupby("n")["label"].nunique().gt(1).sum())
    q = pq.read_table(os.path.join(out, "quarantine")).to_pandas()
    listed = q[q["reason"] == "label_conflict"]
    print(f"\nSMS: {summary['rows']['duplicates']} duplicates with normalisation ({exact} exact); "
          f"{n_conflicting_keys} texts with conflicting labels, {len(listed)} rows quarantined for it")
    assert (len(listed) > 0) == (n_conflicting_keys > 0)
    rows = summary["rows"]
    assert rows["input"] == len(sms) == rows["train"] + rows["test"] + rows["quarantined"] + rows["duplicates"]


def test_sms_spam_rules_precision_recall(tmp_path):
    summary, out = _run(os.path.join(TESTS, "configs", "sms.yaml"), tmp_path,
                        edit=lambda d: d["clean"].update(rules=SPAM_RULES, dedup=None))
    q = pq.read_table(os.path.join(out, "quarantine")).to_pandas()
    flagged = q[q["reason"] == "spam"]
    labels = flagged["record"].str.split("\t", n=1).str[0]
    sms = _sms_frame()
    tp = int((labels == "spam").sum())
    precision = tp / max(len(flagged), 1)
    recall = tp / int((sms["label"] == "spam").sum())
    print(f"\nSMS keyword/URL rules: flagged {len(flagged)}, precision {precision:.3f}, recall {recall:.3f}")
    assert len(flagged) == summary["rows"]["quarantined"] > 0
    assert set(q["stage"]) == {"clean"}


def test_chicago_taxi_missing_values(tmp_path):
    summary, out = _run(os.path.join(TESTS, "configs", "chicago.yaml"), tmp_path)
    rows = summary["rows"]
    assert rows["input"] == 15002
    assert rows["input"] == rows["train"] + rows["dev"] + rows["test"] + rows["quarantined"] + rows["duplicates"]
    train = pq.read_table(os.path.join(out, "transformed", "train")).to_pandas()
    raw = pq.read_table(os.path.join(out, "raw", "train")).to_pandas()
    assert raw["company"].isna().sum() > 1000                        # missing metadata rides along as null
    for col in ["fare_xf", "trip_miles_xf", "trip_seconds_xf", "dropoff_latitude_xf"]:
        assert np.isfinite(train[col]).all(), col                     # filled with the train mean, then scaled
    filled = train.merge(raw[["example_id", "dropoff_latitude"]], on="example_id")
    z_missing = filled.loc[filled["dropoff_latitude"].isna(), "dropoff_latitude_xf"].to_numpy()
    assert len(z_missing) > 100
    # Filled with the train mean, then scaled: every filled row gets the same z, which is ~0.
    # (TFT sums in float32 in bundle order, so fill mean and z-score mean differ in the 7th digit;
    # with latitudes ~41.9 and a std of ~0.04 that is up to ~1e-3 in z.)
    stats_all = json.load(open(os.path.join(out, "report.json")))["features"]["columns"]
    stats = stats_all["dropoff_latitude"]
    assert stats["fill"] == pytest.approx(raw["dropoff_latitude"].mean(), rel=1e-6)
    assert np.ptp(z_missing) == 0 and abs(z_missing[0]) < 1e-2
    # log_zscore after the mean fill, against pandas: the statistics are the filled column's
    seconds = raw["trip_seconds"].astype(np.float32)
    assert seconds.isna().sum() > 0 and len(raw) == len(train)
    logged = np.log1p(np.maximum(seconds.fillna(seconds.mean()), 0))
    want_z = ((logged - logged.mean()) / logged.std(ddof=0)).to_numpy()
    got_z = train.set_index("example_id").loc[raw["example_id"], "trip_seconds_xf"].to_numpy()
    np.testing.assert_allclose(got_z, want_z, atol=2e-4)
    assert stats_all["trip_seconds"]["std"] == pytest.approx(logged.std(ddof=0), rel=1e-4)
    # `tf_compat_v1: false`: a TF2 SavedModel, whose `transform_raw_features` runs eagerly
    import tensorflow as tf
    import tensorflow_transform as tft
    from tensorflow.python.saved_model import loader_impl

    tft_output = tft.TFTransformOutput(out)
    graphs = loader_impl.parse_saved_model(tft_output.transform_savedmodel_dir).meta_graphs
    assert [list(g.meta_info_def.tags) for g in graphs] == [["serve"]]
    spec = tft_output.raw_feature_spec()
    sample = raw.dropna(subset=list(spec)).head(3)
    inputs = {name: tf.sparse.from_dense(tf.constant(
        sample[name].to_numpy().astype(bytes if f.dtype == tf.string else f.dtype.as_numpy_dtype)[:, None]))
        for name, f in spec.items()}
    z = tft_output.transform_raw_features(inputs)["fare_xf"].numpy()
    want = filled.set_index("example_id").loc[sample["example_id"], "fare_xf"].to_numpy()
    np.testing.assert_allclose(z, want, atol=1e-5)


def test_one_broken_line_in_ten(tmp_path):
    lines = open(shared("adult.data")).read().splitlines()[:2000]
    broken = [("garbage line without fields" if i % 10 == 9 else line) for i, line in enumerate(lines)]
    (tmp_path / "broken.csv").write_text("\n".join(broken) + "\n")
    cfg_path = os.path.join(TESTS, "configs", "adult.yaml")

    def edit(d):
        d["inputs"] = [dict(d["inputs"][0], path=str(tmp_path / "broken.csv"))]
        d.pop("features")

    summary, out = _run(cfg_path, tmp_path, edit=edit)
    q = pq.read_table(os.path.join(out, "quarantine")).to_pandas()
    assert summary["rows"]["input"] == 2000
    assert summary["rows"]["quarantined"] == 200 == len(q)
    assert sorted(q["_row"]) == list(range(10, 2001, 10))
    assert set(q["record"]) == {"garbage line without fields"}
