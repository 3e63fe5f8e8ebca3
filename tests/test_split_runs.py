"""Splits through whole runs: groups never span splits, tiny strata merge, k-fold, and the
assignment independent of shard count and worker processes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from pipeline.config import parse_config
from pipeline.run import run
from tests.conftest import TESTS


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
