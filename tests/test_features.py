"""Features: the config forms, parity of the saved graph with the pipeline's output, no leakage
from dev/test into the analysis, Adult against numpy/pandas, SMS text through tfidf, user code.

Three TFT runs besides the shared Adult run: one small in-memory pipeline (two analyses that
differ only in dev/test), SMS with `tfidf`, SMS with a user preprocessing_fn.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.build import feature_spec, feature_specs
from pipeline.config import ConfigError, FeatureConfig, load_config, parse_config
from tests.conftest import TESTS
from transforms.features import TftInput, output_types, summarize_transform

SPLITS = ["train", "dev", "test"]


def _read(folder: str) -> pd.DataFrame:
    return pq.read_table(folder).to_pandas()


def _tokens(text: str):
    """The Python twin of transforms.features.tokenize: lower-cased runs of letters and digits."""
    return re.findall(r"[^\W_]+", text.lower())


def _tft_vocabulary(counts: Counter, top_k=None, frequency_threshold=None):
    """TFT's order: frequency descending, ties by the value's bytes descending; "" never enters."""
    items = [(v, n) for v, n in counts.items() if v != "" and n >= (frequency_threshold or 0)]
    items.sort(key=lambda vn: (-vn[1], [-b for b in vn[0].encode()] + [1]))
    return [v for v, _ in items][:top_k]


# ---- config forms (no pipeline) -------------------------------------------------------------------

BASE = {"name": "t", "inputs": [{"path": "d.csv", "format": "csv"}],
        "schema": {"label": "y", "columns": {"x": "float", "n": "int", "y": "string", "s": "string"}}}


def _specs(features):
    return feature_specs(parse_config(dict(BASE, features=features)))


def test_string_and_mapping_forms_give_the_same_specs():
    assert _specs({"x": "zscore", "n": "bucketize:10", "s": "vocabulary:50"}) == _specs(
        {"x": {"transform": "zscore"}, "n": {"transform": "bucketize", "buckets": 10},
         "s": {"transform": "vocabulary", "top_k": 50}})
    [s] = _specs({"s": {"transform": "vocabulary", "top_k": 50, "frequency_threshold": 5, "num_oov_buckets": 2,
                        "fill": "most_frequent"}})
    assert (s.arg, s.frequency_threshold, s.num_oov_buckets, s.fill) == (50, 5, 2, "most_frequent")
    [t] = _specs({"s": {"transform": "tfidf", "vocab": 1000}})
    assert (t.kind, t.arg, t.output_names) == ("tfidf", 1000, ["s_xf_ids", "s_xf_weights"])
    [v] = _specs({"x": {"transform": "minmax", "fill_value": -1}})       # fill_value alone means fill: value
    assert (v.fill, v.fill_value) == ("value", -1)


@pytest.mark.parametrize("features, expected", [
    ({"s": "tfidf"}, "features.s: tfidf needs a vocabulary size"),
    ({"x": "tokens_vocabulary"}, "features.x: tokens_vocabulary needs a string column"),
    ({"s": {"transform": "vocabulary", "topk": 3}}, "features.s.topk: unknown key for vocabulary"),
    ({"s": {"top_k": 3}}, "features.s.transform: required"),
    ({"s": {"transform": "vocabulary", "fill": "mean"}}, "features.s.fill: mean needs a numeric column"),
    ({"x": {"transform": "zscore", "fill": "median"}}, "features.x.fill: must be value, mean or most_frequent"),
    ({"x": {"transform": "zscore", "fill": "value"}}, "features.x.fill_value: fill: value needs a number"),
    ({"s": {"transform": "vocabulary", "fill_value": 3}}, "features.s.fill_value: fill: value needs a string"),
    ({"s": {"transform": "vocabulary:5", "top_k": 5}}, "features.s.top_k: given twice"),
    ({"s": {"transform": "vocabulary", "frequency_threshold": -1}}, "features.s.frequency_threshold: must be an"),
    ({"x": 3}, "features.x: must be a transform name or a mapping"),
    ({"preprocessing_fn": "m-f"}, "features.preprocessing_fn: must be 'module:function'"),
])
def test_bad_feature_entries_name_the_field(features, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(dict(BASE, features=features))
    assert str(e.value).startswith(expected), str(e.value)


def test_user_and_declarative_outputs_must_not_clash():
    from transforms.features import combined_preprocessing_fn

    both = combined_preprocessing_fn(lambda inputs: {"a": 1, "b_xf": 2}, lambda inputs: {"b_xf": 3})
    with pytest.raises(ValueError, match="'b_xf' is produced twice"):
        both({})
    assert combined_preprocessing_fn(lambda i: {"a": 1}, lambda i: {"b": 2})({}) == {"a": 1, "b": 2}


def test_decode_keeps_varlen_columns_as_lists_whatever_the_batch():
    import tensorflow as tf

    spec = {"a_xf": tf.io.FixedLenFeature([], tf.float32), "t_xf": tf.io.VarLenFeature(tf.int64)}
    tft_input = TftInput({}, {"example_id": pa.string()}).with_outputs(spec)
    one_each = pa.RecordBatch.from_arrays(
        [pa.array([[1.5], [2.5]], pa.list_(pa.float32())), pa.array([[7], [8]], pa.list_(pa.int64())),
         pa.array([["a"], ["b"]], pa.list_(pa.string()))], names=["a_xf", "t_xf", "__pt__example_id"])
    decoded = tft_input.decode((one_each, {}))
    assert decoded.schema == tft_input.output_schema()
    assert decoded.schema.field("t_xf").type == pa.list_(pa.int64())           # one token per row: still a list
    assert decoded.schema.field("a_xf").type == pa.float32()
    assert decoded.column("t_xf").to_pylist() == [[7], [8]]
    assert output_types(spec) == {"a_xf": pa.float32(), "t_xf": pa.list_(pa.int64())}



def test_read_stats_of_a_tf1_graph_from_constants_a_table_and_not_from_data(tmp_path):
    """The TF1 transform graph's stats: those of constants (a while loop's too: its cycle ends
    the walk) from their own subgraph, one of an initialised table from the loaded SavedModel,
    those that need the input data skipped."""
    import tensorflow as tf

    from tensorflow.python.ops import control_flow_util

    from transforms.features import read_stats
    from transforms.features.library import report_stat

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("b\na\nc\n")
    export = str(tmp_path / "saved")
    with tf.Graph().as_default() as g:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        report_stat("age", "mean", tf.constant(3.0) * tf.constant(2.5))
        report_stat("age", "boundaries", tf.reshape(tf.constant([1.0, 2.0, 4.0]), [1, 3]))
        report_stat("city", "fill", tf.constant("Köln"))
        report_stat("age", "max_seen", tf.reduce_max(x))            # needs data: skipped
        v2_loops, control_flow_util.ENABLE_CONTROL_FLOW_V2 = control_flow_util.ENABLE_CONTROL_FLOW_V2, False
        try:    # TF1 loops: a cycle of nodes in the GraphDef (v2's While is one node)
            report_stat("age", "rounds", tf.while_loop(lambda i: i < 3, lambda i: i + 1, [tf.constant(0)])[0])
            report_stat("age", "rounds_seen", tf.while_loop(lambda i: i < tf.size(x), lambda i: i + 1,
                                                            [tf.constant(0)])[0])   # a loop on the data: skipped
        finally:
            control_flow_util.ENABLE_CONTROL_FLOW_V2 = v2_loops
        table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            str(vocab), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER), -1)
        report_stat("city", "index_of_a", table.lookup(tf.constant("a")))   # needs the init op
        with tf.compat.v1.Session(graph=g) as session:
            session.run(tf.compat.v1.tables_initializer())
            builder = tf.compat.v1.saved_model.Builder(export)
            builder.add_meta_graph_and_variables(session, ["transform"], main_op=tf.compat.v1.tables_initializer())
            builder.save()
    assert read_stats(export) == {("age", "mean"): 7.5, ("age", "boundaries"): [1.0, 2.0, 4.0],
                                  ("age", "rounds"): 3, ("city", "fill"): "Köln", ("city", "index_of_a"): 1}


def test_one_transform_routes_each_row_to_its_split():
    """The three splits go through one TransformDataset tagged by split; a batch holding
    rows of several splits comes out as one batch per split, rows in order, tag dropped."""
    import tensorflow as tf
    from apache_beam import pvalue

    from transforms.features.stage import SPLIT_TAG, _DecodeBySplit, split_tag

    spec = {"a_xf": tf.io.FixedLenFeature([], tf.float32)}
    decoder = TftInput({}, {"example_id": pa.string(), SPLIT_TAG: pa.int8()}).with_outputs(spec)
    mixed = pa.RecordBatch.from_arrays(
        [pa.array([[1.0], [2.0], [3.0], [4.0]], pa.list_(pa.float32())),
         pa.array([["a"], ["b"], ["c"], ["d"]], pa.list_(pa.string())),
         pa.array([[1], [0], [1], [2]], pa.list_(pa.int8()))],
        names=["a_xf", "__pt__example_id", "__pt__" + SPLIT_TAG])
    fn = _DecodeBySplit(decoder, SPLIT_TAG, ["train", "dev", "test"])
    got = {}
    for out in fn.process((mixed, {})):
        assert isinstance(out, pvalue.TaggedOutput)
        assert out.value.schema.names == ["a_xf", "example_id"]
        got.setdefault(out.tag, []).extend(out.value.column("example_id").to_pylist())
    assert got == {"train": ["b"], "dev": ["a", "c"], "test": ["d"]}
    [(only)] = list(fn.process((mixed.slice(1, 1), {})))
    assert only.tag == "train" and only.value.column("a_xf").to_pylist() == [2.0]
    assert list(fn.process((mixed.slice(0, 0), {}))) == []
    assert split_tag({"x", "example_id"}) == SPLIT_TAG
    assert split_tag({SPLIT_TAG, "_" + SPLIT_TAG}) == "__" + SPLIT_TAG    # never a column of the input

# ---- Adult: parity, reference, summary --------------------------------------------------------------

@pytest.fixture(scope="module")
def out(adult_run):
    return adult_run["summary"]["output"]


@pytest.fixture(scope="module")
def adult_cfg():
    return load_config(os.path.join(TESTS, "configs", "adult.yaml"))


def _sparse_inputs(frame: pd.DataFrame, raw_spec):
    """Raw rows → the tf.SparseTensor dict of TFT's raw feature spec (a null is no value)."""
    import tensorflow as tf

    inputs = {}
    for name, feature in raw_spec.items():
        col = frame[name]
        present = col.notna().to_numpy()
        rows = np.flatnonzero(present)
        values = col[present].to_numpy()
        if feature.dtype == tf.string:
            values = values.astype(object).astype(str)
        inputs[name] = tf.SparseTensor(np.stack([rows, np.zeros_like(rows)], axis=1).astype(np.int64),
                                       tf.constant(values, dtype=feature.dtype), [len(frame), 1])
    return inputs


def test_parity_saved_graph_on_raw_dev_equals_pipeline_output(out):
    """The graph a trainer loads, applied to the raw dev rows in plain TF, gives the pipeline's rows."""
    import tensorflow as tf
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(out)
    raw = _read(os.path.join(out, "raw", "dev")).sort_values("example_id").reset_index(drop=True)
    piped = _read(os.path.join(out, "transformed", "dev")).set_index("example_id").loc[raw["example_id"]]
    result = tft_output.transform_features_layer()(_sparse_inputs(raw, tft_output.raw_feature_spec()))
    spec = tft_output.transformed_feature_spec()
    assert set(result) == set(spec) and set(spec) <= set(piped.columns)
    for name, tensor in result.items():
        got = tf.sparse.to_dense(tensor).numpy() if isinstance(tensor, tf.SparseTensor) else tensor.numpy()
        want = np.stack(piped[name].to_numpy()) if got.ndim > 1 else piped[name].to_numpy()
        assert got.shape == want.shape, name
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_adult_features_equal_numpy_on_train(out, adult_cfg):
    import tensorflow_transform as tft

    raw = {s: _read(os.path.join(out, "raw", s)) for s in SPLITS}
    xf = {s: _read(os.path.join(out, "transformed", s)).set_index("example_id").loc[raw[s]["example_id"]]
          for s in SPLITS}
    train = raw["train"]
    summary = summarize_transform(out, feature_specs(adult_cfg))
    cols = summary["columns"]
    for col in ["age", "fnlwgt", "education_num", "hours_per_week"]:
        mean, std = train[col].mean(), train[col].std(ddof=0)
        assert cols[col]["mean"] == pytest.approx(mean, rel=1e-5) and cols[col]["std"] == pytest.approx(std, rel=1e-4)
        for s in SPLITS:
            np.testing.assert_allclose(xf[s][f"{col}_xf"], (raw[s][col] - mean) / std, rtol=1e-4, atol=1e-4)

    lo, hi = train["capital_loss"].min(), train["capital_loss"].max()
    assert (cols["capital_loss"]["min"], cols["capital_loss"]["max"]) == (lo, hi)
    for s in SPLITS:
        np.testing.assert_allclose(xf[s]["capital_loss_xf"], (raw[s]["capital_loss"] - lo) / (hi - lo), atol=1e-6)

    # Quantile boundaries: each within TFT's epsilon (min(1/N, 0.01)) of its rank; buckets exact.
    boundaries = np.asarray(cols["capital_gain"]["boundaries"])
    n_buckets = 20
    assert len(boundaries) == n_buckets - 1 and np.all(np.diff(boundaries) >= 0)
    gains = np.sort(train["capital_gain"].to_numpy())
    eps = min(1 / n_buckets, 0.01)
    for i, b in enumerate(boundaries, start=1):
        below = np.searchsorted(gains, b, side="left") / len(gains)
        upto = np.searchsorted(gains, b, side="right") / len(gains)
        assert below - eps <= i / n_buckets <= upto + eps, (i, b, below, upto)
    assert boundaries[-1] > 0 == boundaries[0]                      # the top 5% of gains get their own bucket
    for s in SPLITS:
        expected = np.searchsorted(boundaries, raw[s]["capital_gain"].to_numpy(np.float32), side="right")
        np.testing.assert_array_equal(xf[s]["capital_gain_xf"], expected)

    tft_output = tft.TFTransformOutput(out)
    for col in ["workclass", "education", "marital_status", "occupation", "relationship"]:
        vocab = _tft_vocabulary(Counter(train[col].dropna()))
        assert [v.decode() for v in tft_output.vocabulary_by_name(col)] == vocab, col
        assert cols[col]["vocabulary_size"] == summary["vocabularies"][col] == len(vocab)
        ids = {v: i for i, v in enumerate(vocab)}
        for s in SPLITS:   # a missing or unseen value → the one OOV bucket, id len(vocab)
            expected = raw[s][col].map(lambda v: ids.get(v, len(vocab))).to_numpy()
            np.testing.assert_array_equal(xf[s][f"{col}_xf"], expected, err_msg=f"{col} {s}")
    assert summary["outputs"]["age_xf"] == "float32" and summary["outputs"]["workclass_xf"] == "int64"
    assert cols["age"]["transform"] == "zscore" and cols["age"]["outputs"] == ["age_xf"]
    assert cols["age"]["fill"] == pytest.approx(train["age"].mean(), rel=1e-5)   # no missing ages: fill = mean


# ---- leakage: two analyses that differ only in dev/test ------------------------------------------

LEAK_TYPES = {"x": "float", "n": "int", "k": "float", "c": "string", "t": "string", "u": "string", "h": "string"}
LEAK_FEATURES = {
    "x": "zscore",
    "n": {"transform": "minmax", "fill": "most_frequent"},
    "k": "bucketize:10",
    "c": {"transform": "vocabulary", "top_k": 3, "frequency_threshold": 2, "fill": "value", "fill_value": "none"},
    "t": "tokens_vocabulary",
    "u": {"transform": "tfidf", "vocab": 6},
    "h": "hash:7",
}
# B re-analyses one column per kind of analyser (mean/var, min/max, quantiles, a vocabulary for the
# fill and one for the terms, tfidf's document counts): a third fewer stages than all of A.
LEAK_B = ("x", "n", "k", "u")
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]


def _leak_batch(rng, rows: int, start: int, shift: float = 0.0, one_token: bool = False) -> pa.RecordBatch:
    def maybe(values, p=0.1):
        return [None if rng.random() < p else v for v in values]

    def text(n_max):
        return " ".join(rng.choice(WORDS, size=rng.integers(0, n_max + 1))).title() + "!"

    cats = ["a", "b", "b", "c", "c", "c", "d"] + (["new"] * 5 if shift else [])
    return pa.RecordBatch.from_arrays([
        pa.array(maybe(rng.normal(10 + shift, 2, rows).tolist()), pa.float64()),
        pa.array(maybe(rng.integers(0, 5, rows).tolist()), pa.int64()),
        pa.array((rng.uniform(0, 100, rows) + shift).tolist(), pa.float64()),
        pa.array(maybe(rng.choice(cats, rows).tolist()), pa.string()),
        pa.array([rng.choice(WORDS) if one_token else text(4) for _ in range(rows)], pa.string()),
        pa.array(maybe([text(6) + (" novel" * int(shift > 0)) for _ in range(rows)]), pa.string()),
        pa.array(rng.choice(WORDS, rows).tolist(), pa.string()),
        pa.array([f"r{start + i}" for i in range(rows)], pa.string()),
    ], names=list(LEAK_TYPES) + ["example_id"])


@pytest.fixture(scope="module")
def leak_runs(tmp_path_factory):
    """One Beam pipeline, two analyses with the same train: A (every transform) and B (LEAK_B),
    whose dev/test are shifted by ±1e4 and carry unseen categories and words."""
    import apache_beam as beam

    from transforms.features import AnalyzeAndTransform, declarative_preprocessing_fn
    from transforms.write import WriteShards

    root = tmp_path_factory.mktemp("leak")
    specs = [feature_spec(FeatureConfig.parse(c, v, LEAK_TYPES[c])) for c, v in LEAK_FEATURES.items()]
    rng = np.random.default_rng(7)
    train = [_leak_batch(rng, 150, 150 * i) for i in range(2)]
    other = {"A": {"dev": [_leak_batch(rng, 40, 1000), _leak_batch(rng, 5, 2000, one_token=True)],
                   "test": [_leak_batch(rng, 40, 3000)]},
             "B": {"dev": [_leak_batch(rng, 60, 1000, shift=1e4)], "test": [_leak_batch(rng, 30, 3000, shift=-1e4)]}}
    tft_input = TftInput(LEAK_TYPES, {"example_id": pa.string()})
    schemas = {}
    with beam.Pipeline() as p:
        train_pc = p | "Train" >> beam.Create(train)
        for run in ("A", "B"):
            splits = {"train": train_pc}
            for s in ("dev", "test"):
                splits[s] = p | f"{run}{s}" >> beam.Create(other[run][s])
            run_specs = specs if run == "A" else [s for s in specs if s.column in LEAK_B]
            transform = AnalyzeAndTransform(declarative_preprocessing_fn(run_specs, LEAK_TYPES), tft_input,
                                            str(root / run / "tmp"), str(root / run))
            result = splits | f"Features{run}" >> transform
            schemas[run] = result.schema
            for s, pcoll in result.splits.items():
                if run == "A":   # B's graph is compared on a probe; its rows are not needed
                    pcoll | f"Write{run}{s}" >> WriteShards(str(root / run / s), 1, result.schema)
    raw = {s: pa.Table.from_batches(batches).to_pandas()
           for s, batches in [("train", train), ("dev", other["A"]["dev"]), ("test", other["A"]["test"])]}
    return {"root": root, "specs": specs, "train": raw["train"], "raw": raw, "schemas": schemas}


def test_dev_and_test_values_do_not_reach_the_analysis(leak_runs):
    import tensorflow as tf
    import tensorflow_transform as tft

    a, b = (str(leak_runs["root"] / r) for r in ("A", "B"))
    summary_a, summary_b = summarize_transform(a, leak_runs["specs"]), summarize_transform(b)
    assert set(summary_b["columns"]) == set(LEAK_B)
    for col, stats in summary_b["columns"].items():      # every analysed statistic B has, A has equal
        assert stats and stats == {k: summary_a["columns"][col][k] for k in stats}, col
    assert {"mean", "std", "fill", "min", "max", "boundaries"} <= {k for v in summary_b["columns"].values() for k in v}
    assert summary_b["vocabularies"] == {"u": summary_a["vocabularies"]["u"]}
    assets_b = os.listdir(os.path.join(b, "transform_fn", "assets"))
    assert len(assets_b) == 2                            # u's terms and n's most frequent value
    for name in assets_b:
        assert open(os.path.join(a, "transform_fn", "assets", name), "rb").read() == \
            open(os.path.join(b, "transform_fn", "assets", name), "rb").read(), name
    probe = _leak_batch(np.random.default_rng(99), 20, 0, shift=50).to_pandas()
    outs = []
    for d in (a, b):
        tft_output = tft.TFTransformOutput(d)
        outs.append(tft_output.transform_features_layer()(_sparse_inputs(probe, tft_output.raw_feature_spec())))
    assert set(outs[1]) == {"x_xf", "n_xf", "k_xf", "u_xf_ids", "u_xf_weights"}
    for name in outs[1]:
        x, y = (tf.sparse.to_dense(o[name]) if isinstance(o[name], tf.SparseTensor) else o[name] for o in outs)
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=name)


def test_every_declarative_transform_against_python(leak_runs):
    import tensorflow_transform as tft

    root, train = leak_runs["root"], leak_runs["train"]
    a = str(root / "A")
    cols = summarize_transform(a, leak_runs["specs"])["columns"]
    raw = leak_runs["raw"]
    xf = {s: _read(os.path.join(a, s)).set_index("example_id").loc[raw[s]["example_id"]] for s in SPLITS}
    # zscore after filling with the train mean: mean unchanged, std of the filled column
    x = train["x"].astype(np.float32)
    filled = x.fillna(x.mean())
    assert cols["x"]["fill"] == pytest.approx(x.mean(), rel=1e-6)
    assert cols["x"]["std"] == pytest.approx(filled.std(ddof=0), rel=1e-5)
    # minmax after filling with the most frequent value
    mode = train["n"].value_counts().sort_index(ascending=False).idxmax()
    assert cols["n"]["fill"] == mode
    for s in SPLITS:
        n = raw[s]["n"].fillna(mode)
        np.testing.assert_allclose(xf[s]["n_xf"], (n - train["n"].min()) / (train["n"].max() - train["n"].min()),
                                   atol=1e-6)
    # bucketize: boundaries within epsilon of their ranks, buckets exact
    k = np.sort(train["k"].to_numpy(np.float32))
    bounds = np.asarray(cols["k"]["boundaries"], np.float32)
    for i, bound in enumerate(bounds, start=1):
        assert abs(np.searchsorted(k, bound) / len(k) - i / 10) <= 0.01 + 1 / len(k), (i, bound)
    for s in SPLITS:
        np.testing.assert_array_equal(xf[s]["k_xf"], np.searchsorted(bounds, raw[s]["k"].to_numpy(np.float32),
                                                                     side="right"))
    # vocabulary with top_k, frequency_threshold and a fill value
    c = train["c"].fillna("none")
    vocab = _tft_vocabulary(Counter(c), top_k=3, frequency_threshold=2)
    assert [v.decode() for v in tft.TFTransformOutput(a).vocabulary_by_name("c")] == vocab
    for s in SPLITS:
        ids = raw[s]["c"].fillna("none").map(lambda v: vocab.index(v) if v in vocab else len(vocab))
        np.testing.assert_array_equal(xf[s]["c_xf"], ids)
    # tokens_vocabulary: a list of ids per row, "" → no tokens
    tokens = Counter(t for text in train["t"] for t in _tokens(text))
    vocab_t = _tft_vocabulary(tokens)
    for s in SPLITS:
        expected = [[vocab_t.index(t) if t in vocab_t else len(vocab_t) for t in _tokens(text)]
                    for text in raw[s]["t"]]
        assert [list(v) for v in xf[s]["t_xf"]] == expected
    # tfidf: ids of the distinct terms (top 6 + one OOV bucket) and tf * (1 + log((N + 1) / (df + 1)))
    docs = [_tokens(text or "") for text in train["u"]]
    vocab_u = _tft_vocabulary(Counter(t for d in docs for t in d), top_k=6)
    term = lambda t: vocab_u.index(t) if t in vocab_u else len(vocab_u)   # noqa: E731
    df = Counter(i for d in docs for i in {term(t) for t in d})
    for s in SPLITS:
        for text, ids, weights in zip(raw[s]["u"], xf[s]["u_xf_ids"], xf[s]["u_xf_weights"]):
            doc = [term(t) for t in _tokens(text or "")]
            counts = Counter(doc)
            assert sorted(ids) == sorted(counts)
            expected = {i: n / len(doc) * (1 + math.log((len(docs) + 1) / (df[i] + 1))) for i, n in counts.items()}
            np.testing.assert_allclose(weights, [expected[i] for i in ids], rtol=1e-5)
    assert cols["u"]["vocabulary_size"] == len(vocab_u)


# ---- the fused vocabularies against TFT's own, file for file ------------------------------------

FUSE_TYPES = {"c": "string", "nl": "string", "none": "string", "n": "int", "t": "string", "u": "string",
              "m": "string", "c-2": "string"}
FUSE_FEATURES = {
    "c": {"transform": "vocabulary", "top_k": 4},                       # ties, a missing value as ""
    "nl": "vocabulary",                                                  # "", \n and \r values: left out
    "none": {"transform": "vocabulary", "frequency_threshold": 10**6},   # nothing left: TFT's placeholder
    "n": {"transform": "vocabulary", "frequency_threshold": 3},          # numbers as text
    "t": "tokens_vocabulary",
    "u": {"transform": "tfidf", "vocab": 5},
    "m": {"transform": "vocabulary", "fill": "most_frequent"},           # needs an analyzer: TFT's own
    "c-2": {"transform": "vocabulary", "fill": "value", "fill_value": "zz", "num_oov_buckets": 3},
}


def _fuse_batch(rng, rows: int, start: int) -> pa.RecordBatch:
    def maybe(values, p=0.15):
        return [None if rng.random() < p else v for v in values]

    words = WORDS + ["Über", "x y"]
    return pa.RecordBatch.from_arrays([
        pa.array(maybe(rng.choice(["a", "b", "c", "d", "e", "f"], rows, p=[.3, .2, .2, .1, .1, .1]).tolist())),
        pa.array(rng.choice(["p", "q", "", "line\nbreak", "car\rriage", "q"], rows).tolist()),
        pa.array(rng.choice(["only", "few"], rows).tolist()),
        pa.array(maybe(rng.integers(-3, 9, rows).tolist()), pa.int64()),
        pa.array([" ".join(rng.choice(words, size=rng.integers(0, 5))) for _ in range(rows)]),
        pa.array(maybe([" ".join(rng.choice(words, size=rng.integers(1, 7))) for _ in range(rows)])),
        pa.array(maybe(rng.choice(["m1", "m2", "m3"], rows).tolist(), 0.3)),
        pa.array(maybe(rng.choice(["k", "l", "zz", "k"], rows).tolist())),
        pa.array([f"f{start + i}" for i in range(rows)]),
    ], names=list(FUSE_TYPES) + ["example_id"])


@pytest.fixture(scope="module")
def fuse_runs(tmp_path_factory):
    """One pipeline, the same features analysed twice on the same splits: the vocabularies
    fused (the default) and each by its own `tft.compute_and_apply_vocabulary`."""
    import apache_beam as beam

    from transforms.features import AnalyzeAndTransform, declarative_preprocessing_fn
    from transforms.write import WriteShards

    root = tmp_path_factory.mktemp("fuse")
    specs = [feature_spec(FeatureConfig.parse(c, v, FUSE_TYPES[c])) for c, v in FUSE_FEATURES.items()]
    rng = np.random.default_rng(3)
    data = {"train": [_fuse_batch(rng, 200, 0), _fuse_batch(rng, 150, 200)], "dev": [_fuse_batch(rng, 60, 1000)],
            "test": [_fuse_batch(rng, 40, 2000)]}
    tft_input = TftInput(FUSE_TYPES, {"example_id": pa.string()})
    with beam.Pipeline() as p:
        splits = {s: p | f"Create[{s}]" >> beam.Create(batches) for s, batches in data.items()}
        for run, fused in (("fused", True), ("tft", False)):
            fn = declarative_preprocessing_fn(specs, FUSE_TYPES, fuse_vocabularies=fused)
            result = splits | f"Features[{run}]" >> AnalyzeAndTransform(fn, tft_input, str(root / run / "tmp"),
                                                                         str(root / run))
            for s, pcoll in result.splits.items():
                pcoll | f"Write[{run}][{s}]" >> WriteShards(str(root / run / s), 1, result.schema)
    return root


def _files(folder) -> dict:
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(folder) for f in names}


def test_fused_vocabularies_are_tfts_own_byte_for_byte(fuse_runs):
    """Vocabulary files, the transformed metadata (schema with the vocabulary size annotations,
    asset map), every transformed row and a probe through the saved graphs: all equal."""
    import tensorflow_transform as tft

    fused, own = fuse_runs / "fused", fuse_runs / "tft"
    assets = _files(fused / "transform_fn" / "assets")
    assert assets == _files(own / "transform_fn" / "assets")
    assert {"c", "nl", "none", "n", "t", "u", "c-2", "dataprep_fill_m", "m"} == set(assets)
    assert assets["none"] == b"49d0cd50-04bb-48c0-bc6f-5b575dce351a\n"        # TFT's empty vocabulary
    assert set(assets["nl"].split(b"\n")) == {b"p", b"q", b""}                 # "", \n, \r left out
    assert _files(fused / "transformed_metadata") == _files(own / "transformed_metadata")
    for s in SPLITS:
        assert _files(fused / s) == _files(own / s), s
    summaries = [summarize_transform(str(d), None) for d in (fused, own)]
    assert summaries[0] == summaries[1] and summaries[0]["vocabularies"]["n"] >= 1
    # and both are TFT's order (see _tft_vocabulary), as the saved graph reads them
    rng = np.random.default_rng(3)
    train = pa.Table.from_batches([_fuse_batch(rng, 200, 0), _fuse_batch(rng, 150, 200)]).to_pandas()
    output = tft.TFTransformOutput(str(fused))
    assert [v.decode() for v in output.vocabulary_by_name("c-2")] == _tft_vocabulary(Counter(train["c-2"].fillna("zz")))
    assert [v.decode() for v in output.vocabulary_by_name("c")] == _tft_vocabulary(Counter(train["c"].fillna("")),
                                                                                   top_k=4)


def test_varlen_outputs_stay_lists_in_every_batch_and_shard(leak_runs):
    dev = pq.read_table(os.path.join(leak_runs["root"], "A", "dev"))
    schema = leak_runs["schemas"]["A"]
    assert dev.schema.field("t_xf").type == schema.field("t_xf").type == pa.list_(pa.int64())
    assert dev.schema.field("u_xf_weights").type == pa.list_(pa.float32())
    assert dev.schema.field("x_xf").type == pa.float32()
    one_token_rows = dev.to_pandas().query("example_id >= 'r2000' and example_id < 'r3000'")
    assert len(one_token_rows) == 5 and all(len(v) == 1 for v in one_token_rows["t_xf"])
    assert leak_runs["schemas"]["B"].field("u_xf_ids").type == pa.list_(pa.int64())
    for s in SPLITS:
        [shard] = glob.glob(os.path.join(leak_runs["root"], "A", s, "*.parquet"))
        assert pq.read_schema(shard).remove_metadata() == schema.remove_metadata()



def test_each_split_holds_exactly_its_own_rows(leak_runs):
    raw = leak_runs["raw"]
    for s in SPLITS:
        written = _read(os.path.join(leak_runs["root"], "A", s))
        assert sorted(written["example_id"]) == sorted(raw[s]["example_id"]), s
        assert "__split" not in written.columns

# ---- SMS: tfidf and a user preprocessing_fn, end to end in one run ---------------------------------

@pytest.fixture(scope="module")
def sms_run(tmp_path_factory):
    """tests/configs/sms.yaml with `text: tfidf` and the user fn of tests/user_features.py beside it."""
    from pipeline.run import run

    path = os.path.join(TESTS, "configs", "sms.yaml")
    data = yaml.safe_load(open(path))
    data["features"] = {"preprocessing_fn": "tests.user_features:preprocessing_fn",
                        "text": {"transform": "tfidf", "vocab": 500}}
    cfg = parse_config(data, base_dir=os.path.dirname(path))
    tmp = tmp_path_factory.mktemp("sms")
    return cfg, run(cfg, output=str(tmp), store=str(tmp / "m.sqlite"))["output"]


def test_sms_text_through_tfidf_end_to_end(sms_run):
    import tensorflow_transform as tft

    cfg, out = sms_run
    train_raw = _read(os.path.join(out, "raw", "train"))
    docs = [_tokens(t) for t in train_raw["text"]]
    vocab = [v.decode() for v in tft.TFTransformOutput(out).vocabulary_by_name("text")]
    assert vocab == _tft_vocabulary(Counter(t for d in docs for t in d), top_k=500)
    term = {t: i for i, t in enumerate(vocab)}
    df = Counter(i for d in docs for i in {term.get(t, 500) for t in d})
    for split in ("train", "test"):
        raw = _read(os.path.join(out, "raw", split))
        shards = glob.glob(os.path.join(out, "transformed", split, "*.parquet"))
        schema = pq.read_schema(shards[0])
        assert schema.field("text_xf_ids").type == pa.list_(pa.int64())
        assert schema.field("text_xf_weights").type == pa.list_(pa.float32())
        xf = _read(os.path.join(out, "transformed", split)).set_index("example_id").loc[raw["example_id"]]
        assert (xf["label"].to_numpy() == raw["label"].to_numpy()).all()
        for text, ids, weights in zip(raw["text"], xf["text_xf_ids"], xf["text_xf_weights"]):
            doc = [term.get(t, 500) for t in _tokens(text)]
            counts = Counter(doc)
            assert sorted(ids) == sorted(counts), text
            expected = [counts[i] / len(doc) * (1 + math.log((len(docs) + 1) / (df[i] + 1))) for i in ids]
            np.testing.assert_allclose(weights, expected, rtol=1e-5)
    summary = summarize_transform(out, feature_specs(cfg))
    assert summary["columns"]["text"]["vocabulary_size"] == 500
    assert summary["outputs"]["text_xf_ids"] == "list<int64>"
    assert summary["outputs"]["text_xf_weights"] == "list<float32>"


def test_user_preprocessing_fn_end_to_end(sms_run):
    _, out = sms_run
    raw = _read(os.path.join(out, "raw", "train"))
    xf = _read(os.path.join(out, "transformed", "train")).set_index("example_id").loc[raw["example_id"]]
    lengths = raw["text"].str.len()
    assert abs(xf["length_z"].mean()) < 1e-4 and abs(xf["length_z"].std(ddof=0) - 1) < 1e-3
    assert (xf["n_tokens"].to_numpy() == [len(_tokens(t)) for t in raw["text"]]).all()
    assert [len(w) for w in xf["words"]] == xf["n_tokens"].tolist()
    stats = summarize_transform(out)["columns"]["text"]
    assert stats["mean_length"] == pytest.approx(lengths.mean(), rel=1e-5)
    assert stats["std_length"] == pytest.approx(lengths.std(ddof=0), rel=1e-4)


def test_vocabularies_are_pruned_as_tokens_arrive_and_give_the_files_of_the_whole_list():
    """`PrunedVocabularies` keeps at most 2 × top_k (count, token) pairs per vocabulary at any
    time, and what it gives orders into the same file, sizes included, as the whole list of
    distinct tokens would (threshold, then top_k, ties by token)."""
    import random

    from transforms.features.vocabulary import PrunedVocabularies, ordered_vocabulary

    rng = random.Random(5)
    specs = [("a", 10, None), ("b", None, 3.0), ("c", 4, 2.0), ("empty", 5, 1000.0)]
    pairs = [(i, (float(rng.choice([1, 2, 2, 3, 5, 8])), f"t{i}-{n}".encode())) for i in range(4) for n in range(700)]
    rng.shuffle(pairs)
    fn = PrunedVocabularies(specs)
    accs, largest = [], 0
    for part in (pairs[:900], pairs[900:1500], pairs[1500:]):
        acc = fn.create_accumulator()
        for p in part:
            acc = fn.add_input(acc, p)
            largest = max(largest, len(acc.get(0, [0, []])[1]), len(acc.get(2, [0, []])[1]))
        accs.append(acc)
    out = fn.extract_output(fn.merge_accumulators(accs))
    assert largest <= 2 * 10
    for i, (name, top_k, threshold) in enumerate(specs):
        whole = [ct for j, ct in pairs if j == i]
        distinct, kept = out[i]
        assert distinct == 700
        assert ordered_vocabulary(kept, top_k, threshold, unpruned=distinct) == \
            ordered_vocabulary(whole, top_k, threshold), name
def test_tf_names_keep_plain_columns_and_make_any_other_name_valid_and_distinct():
    """Scope and vocabulary names (issue 35): a plain column's are as before (the same graph,
    the same vocabulary files); any other is a valid TF scope name, distinct from the
    names of columns that differ only in the characters it drops."""
    import re

    from transforms.features.library import tf_name

    for plain in ("age", "capital_gain", "a.b", "x-1", "Z9"):
        assert tf_name(plain) == plain
    awkward = ["größe (cm)", "farbe name", "farbe_name ", "farbe-name!", "a/b", "", "日本", "x y", "x_y "]
    names = [tf_name(c) for c in awkward]
    assert len(set(names) | {"farbe_name", "x_y"}) == len(names) + 2
    assert all(re.fullmatch(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*", "fill_" + n) for n in names)
    assert tf_name("größe (cm)").startswith("gr_e_cm_")
