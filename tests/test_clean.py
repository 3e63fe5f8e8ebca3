"""Clean (transforms/clean/): coercion, every rule, label normalisation, validation order, deduplication."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.clean import (DedupSpec, Deduplicate, RuleSpec, ValidateSpec, coerce, dedup_table, normalize_labels,
                              rule_failures, validate_batch)


def as_rule(**checks) -> RuleSpec:
    """A rule written as in the config (`in:` for `in_`)."""
    if "in" in checks:
        checks["in_"] = tuple(checks.pop("in"))
    return RuleSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in checks.items()})


def test_coerce_numbers_and_bools():
    typed, bad = coerce(pa.array(["1", " +2 ", "x", None, "3.5", "-4"]), "int")
    assert typed.to_pylist() == [1, 2, None, None, None, -4]
    assert bad.tolist() == [False, False, True, False, True, False]
    typed, bad = coerce(pa.array(["1.5", "+2", ".5", "1e3", "nan", "abc", "1,5"]), "float")
    assert typed.to_pylist()[:4] == [1.5, 2.0, 0.5, 1000.0] and np.isnan(typed.to_pylist()[4])
    assert bad.tolist() == [False] * 5 + [True, True]
    typed, bad = coerce(pa.array(["true", "No", "1", "maybe"]), "bool")
    assert typed.to_pylist() == [True, False, True, None] and bad.tolist() == [False, False, False, True]
    typed, bad = coerce(pa.array([1, 2], pa.int64()), "float")           # Parquet ints into a float column
    assert typed.type == pa.float64() and not bad.any()


@pytest.mark.parametrize("rule, values, failing", [
    ({"min": 0}, [-1.0, 0.0, 5.0, None], [True, False, False, False]),
    ({"max": 10}, [11.0, 10.0, None, 3.0], [True, False, False, False]),
    ({"in": ["a", "b"]}, ["a", "c", None, "b"], [False, True, False, False]),
    ({"not_in": ["a"]}, ["a", "c", None, "b"], [True, False, False, False]),
    ({"matches": r"[a-z]+"}, ["abc", "ab1", None, ""], [False, True, False, True]),
    ({"not_matches": "(?i)free money"}, ["FREE MONEY now", "hello", None, "free"], [True, False, False, False]),
    ({"not_null": True}, ["a", None, "", None], [False, True, False, True]),
    ({"max_length": 3}, ["abc", "abcd", None, ""], [False, True, False, False]),
])
def test_each_rule(rule, values, failing):
    kind = pa.float64() if any(isinstance(v, float) for v in values) else pa.string()
    checks = rule_failures(pa.array(values, kind), as_rule(column="c", **rule))
    assert len(checks) == 1
    assert checks[0][1].tolist() == failing


def _raw(**cols):
    n = len(next(iter(cols.values())))
    cols.setdefault("_source", ["f.csv"] * n)
    cols.setdefault("_row", list(range(2, n + 2)))
    cols.setdefault("_record", [f"line{i}".encode() for i in range(n)])
    return pa.RecordBatch.from_pydict(cols)


def test_validate_first_reason_wins_and_nothing_is_lost():
    spec = ValidateSpec(column_types={"x": "float", "y": "string"}, label="y", id_column=None,
                        rules=(as_rule(column="x", min=0, max=10),
                               as_rule(column="y", **{"in": ["a", "b"]}, reason="bad_label")),
                        label_map=(("A", "a"),))
    batch = _raw(x=["1", "oops", "-1", "20", "5", "3", None], y=["a", "a", "b", "b", None, "c", "A"])
    clean, q = validate_batch(batch, spec)
    assert clean.num_rows + q.num_rows == batch.num_rows
    assert clean.column("y").to_pylist() == ["a", "a"]                 # "A" normalised before the in-rule
    assert clean.column("x").to_pylist() == [1.0, None]                # a null x passes min/max
    assert dict(zip(q.column("_row").to_pylist(), q.column("reason").to_pylist())) == {
        3: "type:x", 4: "min:x", 5: "max:x", 6: "missing_label", 7: "bad_label"}
    assert q.column("record").to_pylist()[0] == "line1"
    ids = clean.column("example_id").to_pylist()
    assert len(set(ids)) == 2 and all(i.endswith(("-2", "-8")) for i in ids)


def test_validate_id_column():
    spec = ValidateSpec(column_types={"id": "string", "y": "string"}, label="y", id_column="id")
    clean, q = validate_batch(_raw(id=["k1", None, "k3"], y=["a", "a", "a"]), spec)
    assert clean.column("example_id").to_pylist() == ["k1", "k3"]
    assert q.column("reason").to_pylist() == ["missing_id"]


def test_normalize_labels():
    out = normalize_labels(pa.array([" Scratch", "none", "...", None]), {"scratch": "scratch", "...": ","},
                           trim=True, case_fold=True)
    assert out.to_pylist() == ["scratch", "none", ",", None]


def test_dedup_keeps_lowest_source_and_row_like_pandas():
    rng = np.random.default_rng(0)
    n = 500
    frame = pd.DataFrame({"k": rng.integers(0, 60, n).astype(str), "v": rng.integers(0, 2, n),
                          "_source": rng.choice(["a.csv", "b.csv"], n), "_row": rng.permutation(n) + 1})
    frame["example_id"] = frame["_source"] + ":" + frame["_row"].astype(str)
    kept, dups, conflicts = dedup_table(pa.Table.from_pandas(frame, preserve_index=False), DedupSpec(keys=("k", "v")))
    assert conflicts.num_rows == 0
    ref = frame.sort_values(["_source", "_row"])
    ref_kept = ref[~ref.duplicated(["k", "v"], keep="first")]
    assert sorted(kept.column("example_id").to_pylist()) == sorted(ref_kept["example_id"])
    assert kept.num_rows + dups.num_rows == n
    first = ref.groupby(["k", "v"])["example_id"].transform("first")
    expected = dict(zip(ref["example_id"], first))
    for dropped, kept_id in zip(dups.column("example_id").to_pylist(), dups.column("kept_example_id").to_pylist()):
        assert expected[dropped] == kept_id != dropped


@pytest.mark.parametrize("spilled", [False, True], ids=["shuffled", "spilled"])
def test_deduplicate_pipeline_is_independent_of_batching(spilled, tmp_path):
    rows = [{"k": str(i % 7), "example_id": f"e{i}", "_source": "s", "_row": i} for i in range(40)]
    table = pa.Table.from_pylist(rows)
    batches = table.to_batches(max_chunksize=6)
    p = TestPipeline()
    out = p | beam.Create(batches[::-1]) | Deduplicate(DedupSpec(keys=("k",)), buckets=3,
                                                        spill=str(tmp_path / "spill") if spilled else None)
    kept = out.rows | "K" >> beam.FlatMap(lambda b: b.column("example_id").to_pylist())
    dups = out.duplicates | "D" >> beam.FlatMap(
        lambda b: list(zip(b.column("example_id").to_pylist(), b.column("kept_example_id").to_pylist())))
    assert_that(kept, equal_to([f"e{i}" for i in range(7)]), label="kept")
    assert_that(dups, equal_to([(f"e{i}", f"e{i % 7}") for i in range(7, 40)]), label="dups")
    result = p.run()
    result.wait_until_finish()
    # buckets are deduplicated on threads; the counter is still incremented (metrics are per thread)
    from apache_beam.metrics.metric import MetricsFilter

    counters = result.metrics().query(MetricsFilter().with_name("clean.duplicates"))["counters"]
    assert sum(c.committed for c in counters) == 33


def test_cross_column_rule_and_filter():
    spec = ValidateSpec(column_types={"start": "int", "end": "int", "y": "string"}, label="y", id_column=None,
                        rules=(as_rule(column="end", op=">=", other="start"),),
                        filters=("tests.test_clean:_odd_start",))
    clean, q = validate_batch(_raw(start=["1", "5", "3", None], end=["2", "4", "9", "1"], y=["a"] * 4), spec,
                              [_odd_start])
    assert dict(zip(q.column("_row").to_pylist(), q.column("reason").to_pylist())) == {3: ">=start:end",
                                                                                    4: "filter:_odd_start"}
    assert clean.column("_row").to_pylist() == [2, 5]


def _odd_start(batch):
    start = batch.column("start").to_numpy(zero_copy_only=False)
    return np.nan_to_num(start.astype(float)) == 3


def test_dedup_normalised_text_and_label_conflicts():
    table = pa.Table.from_pydict({
        "text": ["Hello  World", "hello world ", "Other", "other", "x"],
        "y": ["ham", "ham", "ham", "spam", "ham"],
        "example_id": ["a", "b", "c", "d", "e"], "_source": ["s"] * 5, "_row": [1, 2, 3, 4, 5]})
    spec = DedupSpec(keys=("text",), label="y", trim=True, case_fold=True, collapse_whitespace=True)
    kept, dups, conflicts = dedup_table(table, spec)
    assert kept.column("example_id").to_pylist() == ["a", "e"]
    assert dups.column("example_id").to_pylist() == ["b"] and dups.column("kept_example_id").to_pylist() == ["a"]
    assert conflicts.column("reason").to_pylist() == ["label_conflict"] * 2
    assert conflicts.column("_row").to_pylist() == [3, 4]
    kept, dups, conflicts = dedup_table(table, DedupSpec(keys=("text",), label="y", case_fold=True,
                                                         on_conflict="keep_first"))
    assert conflicts.num_rows == 0
    assert dict(zip(dups.column("example_id").to_pylist(), dups.column("label_conflict").to_pylist())) == {"d": True}


def test_dedup_by_value_when_hashes_collide(monkeypatch):
    """first_of_key groups by a 64-bit hash and checks values: a collision falls back to pandas."""
    import transforms.clean.dedup as clean

    rng = np.random.default_rng(1)
    n = 300
    frame = pd.DataFrame({"k": rng.integers(0, 20, n).astype(str), "v": rng.choice([0.5, np.nan, -0.0, 0.0], n)})
    frame.loc[rng.choice(n, 30), "k"] = None
    keys = {c: pa.array(frame[c], from_pandas=True) for c in frame}
    group = frame.groupby(["k", "v"], dropna=False, sort=False).ngroup().to_numpy()
    order = rng.permutation(n)                       # "first" in this order, as dedup's (_source, _row)
    rank = np.empty(n, int)
    rank[order] = np.arange(n)
    expected = {}
    for o in (None, order):
        r = np.arange(n) if o is None else rank
        first_by_group = {g: min(np.flatnonzero(group == g), key=lambda i: r[i]) for g in set(group)}
        expected[o is None] = np.array([first_by_group[g] for g in group])
        assert (clean.first_of_key(keys, o) == expected[o is None]).all()
    monkeypatch.setattr(clean, "hash_columns", lambda table, columns: np.zeros(table.num_rows, np.uint64))
    for o in (None, order):
        assert (clean.first_of_key(keys, o) == expected[o is None]).all()


def test_integers_float64_cannot_hold_are_found_and_the_others_cast():
    """A Parquet int64 column declared `float` (issue 35): Arrow's safe cast raised on one
    value past 2**53 and failed the run; the value is found (quarantined as
    lossy_float:<column>) and every other one cast, 2**60 (a float exactly) included."""
    import numpy as np

    from transforms.clean.validate import coerce, inexact_as_float

    values = [1, -(2**53), 2**53, 2**53 + 1, 2**60, 2**60 + 1, -(2**60) - 1, 2**63 - 1, -(2**63), None]
    for arr in (pa.array(values, pa.int64()), pa.array([v for v in values if v is None or v >= 0], pa.uint64())):
        got = inexact_as_float(arr).tolist()
        assert got == [v is not None and int(float(v)) != v for v in arr.to_pylist()]
        typed, bad = coerce(arr, "float")
        assert not bad.any() and typed.type == pa.float64()
        assert typed.to_pylist() == [None if v is None else float(v) for v in arr.to_pylist()]
    assert not inexact_as_float(pa.array([1.5, 2.0])).any() and not inexact_as_float(pa.array(["1"])).any()
    assert inexact_as_float(pa.chunked_array([[2**60 + 1], [3]])).tolist() == [True, False]
    assert np.asarray(inexact_as_float(pa.array([], pa.int64()))).shape == (0,)
