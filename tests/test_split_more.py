"""Splits beyond the basics: groups, tiny strata, k-fold, shard/worker independence,
and the distributed assignment under random sizes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import given, settings, strategies as st

from pipeline.config import parse_config
from pipeline.run import run
from tests.conftest import TESTS
from transforms.split import (HASH, STRATUM, _MergeBands, assign_splits, band_stats, plan_split,
                              thresholds_from)


def _outputs(summary, names):
    frames = []
    for s in names:
        t = pq.read_table(os.path.join(summary["output"], "raw", s)).to_pandas()
        frames.append(t.assign(split=s))
    return pd.concat(frames)


def _report(summary):
    with open(os.path.join(summary["output"], "report.json")) as f:
        return json.load(f)


def test_groups_never_span_splits_on_chicago(tmp_path):
    path = os.path.join(TESTS, "configs", "chicago.yaml")
    data = yaml.safe_load(open(path))
    data.pop("features")
    data["split"]["group_by"] = "pickup_community_area"
    summary = run(parse_config(data, base_dir=os.path.dirname(path)), output=str(tmp_path), store=str(tmp_path / "m"))
    rows = _outputs(summary, ["train", "dev", "test"])
    area = rows["pickup_community_area"].fillna(-1)
    spans = rows.assign(area=area).groupby("area")["split"].nunique()
    assert (spans == 1).all() and len(spans) > 50
    balance = _report(summary)["split"]
    assert balance["unit"] == "groups" and balance["largest_deviation"] < 1
    assert {e["split"] for e in balance["examples"]} == {"train", "dev", "test"}
    print(f"\nChicago by pickup area: {len(spans)} groups, 0 span two splits; example-level largest deviation "
          f"{balance['examples_largest_deviation']:.1f} rows")


def _users(tmp_path, n_users=600, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        label = "pos" if rng.random() < 0.3 else "neg"
        for k in range(int(rng.integers(1, 8))):
            flip = rng.random() < 0.2
            rows.append({"id": f"u{u}-{k}", "user": f"user{u}", "site": f"s{rng.integers(0, 5)}",
                         "y": ("neg" if label == "pos" else "pos") if flip else label})
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "users.csv", index=False)
    return frame


def _cfg(tmp_path, split, name="users"):
    return parse_config({"name": name, "inputs": [{"path": str(tmp_path / "users.csv"), "format": "csv"}],
                         "schema": {"id": "id", "label": "y", "columns": {"id": "string", "y": "string"},
                                    "metadata": ["user", "site"]},
                         "split": split, "output": {"shards": 3}})


def test_grouped_split_exact_in_groups(tmp_path):
    frame = _users(tmp_path)
    summary = run(_cfg(tmp_path, {"fractions": {"train": 0.6, "dev": 0.2, "test": 0.2}, "group_by": "user"}),
                  output=str(tmp_path / "o"), store=str(tmp_path / "m"))
    rows = _outputs(summary, ["train", "dev", "test"])
    assert len(rows) == len(frame)
    assert (rows.groupby("user")["split"].nunique() == 1).all()
    majority = frame.groupby("user")["y"].agg(lambda s: sorted(s.value_counts()[lambda c: c == c.max()].index)[0])
    per_user = rows.drop_duplicates("user").set_index("user")["split"]
    table = pd.crosstab(majority.reindex(per_user.index), per_user)
    for label, counts in table.iterrows():
        n = counts.sum()
        for s, f in (("train", 0.6), ("dev", 0.2), ("test", 0.2)):
            assert abs(counts[s] - n * f) < 1, (label, s)


def test_tiny_strata_merge_into_other(tmp_path):
    frame = _users(tmp_path, n_users=300, seed=1)
    frame.loc[frame.index[:2], "site"] = "rare"       # a site with 2 examples: fewer than 3 splits
    frame.to_csv(tmp_path / "users.csv", index=False)
    summary = run(_cfg(tmp_path, {"fractions": {"train": 0.6, "dev": 0.2, "test": 0.2}, "stratify_by": ["y", "site"]}),
                  output=str(tmp_path / "o"), store=str(tmp_path / "m"))
    balance = _report(summary)["split"]
    merged = balance["merged_strata"]
    assert merged and all(json.loads(v)[1] == "<other>" for v in merged.values())
    assert any('"rare"' in k for k in merged)
    assert balance["largest_deviation"] < 1


def test_k_folds(tmp_path):
    frame = _users(tmp_path, n_users=200, seed=2)
    summary = run(_cfg(tmp_path, {"folds": 5}), output=str(tmp_path / "o"), store=str(tmp_path / "m"))
    names = [f"fold-{i}" for i in range(5)]
    rows = _outputs(summary, names)
    assert sorted(rows["id"]) == sorted(frame["id"])
    for label, n in frame["y"].value_counts().items():
        got = rows[rows["y"] == label]["split"].value_counts()
        assert all(abs(got.get(f, 0) - n / 5) < 1 for f in names)


def test_same_assignment_for_1_and_16_shards_and_two_worker_processes(tmp_path):
    _users(tmp_path, n_users=400, seed=3)
    assignments = []
    for k, (shards, args) in enumerate([(1, []), (16, []),
                                        (3, ["--direct_num_workers", "2", "--direct_running_mode",
                                             "multi_processing"])]):
        cfg = _cfg(tmp_path, {"fractions": {"train": 0.6, "dev": 0.2, "test": 0.2}})
        cfg.output.shards = shards
        summary = run(cfg, output=str(tmp_path / f"o{k}"), store=str(tmp_path / f"m{k}"), beam_args=args)
        rows = _outputs(summary, ["train", "dev", "test"])
        assert len(os.listdir(os.path.join(summary["output"], "raw", "train"))) == shards
        assignments.append(dict(zip(rows["id"], rows["split"])))
    assert assignments[0] == assignments[1] == assignments[2]


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 30_000), min_size=1, max_size=6),
       weights=st.lists(st.integers(1, 20), min_size=2, max_size=5), seed=st.integers(0, 2 ** 16))
def test_distributed_assignment_is_exact_for_random_sizes(sizes, weights, seed):
    fractions = [w / sum(weights) for w in weights]
    rng = np.random.default_rng(seed)
    strata = np.concatenate([[f"s{i}"] * n for i, n in enumerate(sizes)])
    u = rng.integers(0, np.iinfo(np.int64).max, len(strata), dtype=np.int64).astype(np.uint64) * np.uint64(2)
    batch = pa.RecordBatch.from_pydict({STRATUM: strata, HASH: pa.array(u, pa.uint64())})
    counts = dict(zip(*np.unique(strata, return_counts=True)))
    counts = {str(k): int(v) for k, v in counts.items()}
    plan = plan_split(counts, fractions)
    pieces = [batch.slice(i, 997) for i in range(0, batch.num_rows, 997)]
    merge = _MergeBands()
    stats = merge.extract_output(merge.merge_accumulators([band_stats(b, plan) for b in pieces]))
    which = assign_splits(batch, plan, thresholds_from(stats, plan))
    for i, s in enumerate(plan["strata"]):
        got = np.bincount(which[strata == s], minlength=len(fractions)).tolist()
        assert got == plan["targets"][i]
        assert all(abs(c - counts[s] * f) < 1 for c, f in zip(got, fractions))
    assert sum(sum(t) for t in plan["targets"]) == len(strata)
