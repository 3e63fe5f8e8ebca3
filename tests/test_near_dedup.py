"""Near-duplicates (MinHash LSH): the pure functions against datasketch, the Beam stage on the
SMS file against datasketch's MinHashLSH, planted near-copies, and the stage in a pipeline."""

from __future__ import annotations

import csv
import json
import os

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from transforms.batches import DUPLICATES_SCHEMA, EXAMPLE_ID, ROW, SOURCE
from transforms.clean.minhash import (band_pairs, minhash_signatures, normalized_text,
                                      optimal_param, shingle_table, union_find_roots)
from transforms.clean.near_dedup import NEAR_DUPLICATES_SCHEMA, NearDedupSpec, NearDeduplicate
from tests.conftest import shared

datasketch = pytest.importorskip("datasketch")

# datasketch ≥ 2 defaults to its "affine32" scheme; "legacy" is (a·h + b) mod 2⁶¹−1, the stage's
LEGACY = {"scheme": "legacy"}

DUP_SCHEMA = NEAR_DUPLICATES_SCHEMA


def _shingles_py(text: str, kind: str = "words", size: int = 3) -> set:
    """The reference shingling, one text at a time."""
    t = " ".join(text.split()).lower()
    if kind == "words":
        w = t.split()
        if not w:
            return set()
        if len(w) < size:
            return {" ".join(w)}
        return {" ".join(w[i:i + size]) for i in range(len(w) - size + 1)}
    if not t:
        return set()
    if len(t) < size:
        return {t}
    return {t[i:i + size] for i in range(len(t) - size + 1)}


def _sets_of(texts, kind="words", size=3):
    shingles, row_of = shingle_table(normalized_text(pa.table({"t": texts}), ["t"]), kind, size)
    out = [set() for _ in texts]
    for s, r in zip(shingles.to_pylist(), row_of):
        out[r].add(s)
    return out


TEXTS = ["Hello  world, this is a TEST", "hello world, this is a test!", "", "  ", "one", "two words",
         "ünïcödé tëxt with äccents and more words here", None]


@pytest.mark.parametrize("kind,size", [("words", 3), ("words", 1), ("chars", 5), ("chars", 2)])
def test_shingles_match_the_one_text_reference(kind, size):
    got = _sets_of(TEXTS, kind, size)
    assert got == [_shingles_py(t or "", kind, size) for t in TEXTS]


def test_signatures_equal_datasketch_minhash():
    texts = TEXTS[:2] + TEXTS[4:7] + [f"message number {i} about the meeting at {i % 7} pm" for i in range(200)]
    shingles, row_of = shingle_table(normalized_text(pa.table({"t": texts}), ["t"]))
    for num_perm, seed in [(128, 1), (64, 7)]:
        sig, has = minhash_signatures(shingles, row_of, len(texts), num_perm, seed, chunk=97)
        assert has.all()
        for i, t in enumerate(texts):
            m = datasketch.MinHash(num_perm=num_perm, seed=seed, **LEGACY)
            m.update_batch([s.encode() for s in _shingles_py(t)])
            assert np.array_equal(sig[i].astype(np.uint64), m.hashvalues), i


def test_empty_text_has_no_signature():
    texts = ["", "a b c d", None]
    shingles, row_of = shingle_table(normalized_text(pa.table({"t": texts}), ["t"]))
    sig, has = minhash_signatures(shingles, row_of, 3)
    assert has.tolist() == [False, True, False]
    assert (sig[0] == 2 ** 32 - 1).all()


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.5, 64), (0.9, 256)])
def test_bands_and_rows_as_datasketch_chooses(threshold, num_perm):
    from datasketch.lsh import _optimal_param

    assert optimal_param(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_band_pairs_all_pairs_then_anchors_past_the_cap():
    keys = np.array([1, 1, 1, 2, 3, 3] + [9] * 10, np.uint64)
    nodes = np.array([5, 3, 4, 7, 8, 1] + list(range(100, 110)), np.int64)
    a, b, stats = band_pairs(keys, nodes, cap=4)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert {(3, 4), (3, 5), (4, 5), (1, 8)} <= pairs
    big = {(x, y) for x, y in pairs if x >= 100}
    # 4 anchors (100..103), each with every higher member: 9 + 8 + 7 + 6
    assert len(big) == 30 and all(x <= 103 for x, _ in big)
    assert stats == {"buckets": 3, "largest_bucket": 10, "oversized_buckets": 1, "oversized_rows": 10}


def test_union_find_lowest_node_per_component():
    a = np.array([5, 6, 7, 20, 1], np.int64)
    b = np.array([6, 7, 8, 21, 30], np.int64)
    nodes, roots = union_find_roots(a, b)
    got = dict(zip(nodes.tolist(), roots.tolist()))
    assert got == {5: 5, 6: 5, 7: 5, 8: 5, 20: 20, 21: 20, 1: 1, 30: 1}
    # a long chain (its diameter does not bound anything)
    chain = np.arange(1000, dtype=np.int64)
    _, r = union_find_roots(chain[1:][::-1], chain[:-1][::-1])
    assert (r == 0).all()


# ---- the Beam stage ----------------------------------------------------------------------------


def _batches(frame: pd.DataFrame, size: int = 500, source: str = "file:///sms.tsv"):
    t = pa.table({"text": pa.array(frame["text"].tolist(), pa.string()),
                  EXAMPLE_ID: pa.array([f"id-{r}" for r in frame["row"]], pa.string()),
                  SOURCE: pa.array([source] * len(frame), pa.string()),
                  ROW: pa.array(frame["row"].tolist(), pa.int64())})
    return t.to_batches(max_chunksize=size)


def _save(value, folder: str, name: str) -> None:
    import pickle
    import uuid

    os.makedirs(os.path.join(folder, name), exist_ok=True)
    with open(os.path.join(folder, name, uuid.uuid4().hex), "wb") as f:
        pickle.dump(value, f)


def _load(folder: str, name: str) -> list:
    import pickle

    where = os.path.join(folder, name)
    out = []
    for f in sorted(os.listdir(where)) if os.path.isdir(where) else []:
        with open(os.path.join(where, f), "rb") as fh:
            out.append(pickle.load(fh))
    return out


def _rows_of(b: pa.RecordBatch, columns=None) -> list:
    t = pa.Table.from_batches([b])
    return (t.select(columns) if columns else t).to_pylist()


def _run_stage(batches, spec, buckets=4, options=None):
    """The stage's kept rows, duplicates, stats and verified pairs (saved to files by the job)."""
    import tempfile

    folder = tempfile.mkdtemp()
    with TestPipeline(options=options) as p:
        res = p | beam.Create(batches, reshuffle=False) | NearDeduplicate(spec, buckets)
        res.rows | "Sk" >> beam.Map(lambda b: _save(_rows_of(b, ["example_id", "_nd_node"]), folder, "rows"))
        res.duplicates | "Sd" >> beam.Map(lambda b: _save(_rows_of(b), folder, "dups"))
        res.stats | "Ss" >> beam.Map(lambda s: _save(s, folder, "stats"))
        res.pairs | "Sp" >> beam.Map(lambda b: _save(_rows_of(b), folder, "pairs"))
    flat = {k: [r for part in _load(folder, k) for r in part] for k in ("rows", "dups", "pairs")}
    return flat["rows"], flat["dups"], _load(folder, "stats")[0], flat["pairs"]


def _sms():
    frame = pd.read_csv(shared("sms_spam_collection.tsv"), sep="\t", header=None, quoting=csv.QUOTE_NONE,
                        names=["label", "text"], keep_default_na=False)
    return frame.assign(row=np.arange(1, len(frame) + 1))


def _components(n: int, pairs) -> list:
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.1, 0.9)])
def test_sms_clusters_equal_datasketch_minhash_lsh(weights):
    """Reference: datasketch's MinHashLSH (same permutations, weights, so bands and rows) gives the
    candidates, each verified by MinHash.jaccard ≥ threshold; clusters are their connected components.
    (0.5, 0.5) is datasketch's default; (0.1, 0.9) the stage's."""
    sms = _sms()
    threshold, num_perm = 0.8, 128
    bands, rows = optimal_param(threshold, num_perm, *weights)
    spec = NearDedupSpec(columns=("text",), threshold=threshold, num_perm=num_perm, bands=bands, rows=rows,
                         bucket_cap=10_000)
    kept, dups, stats, _ = _run_stage(_batches(sms), spec)

    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    assert (lsh.b, lsh.r) == (bands, rows)
    sets = [_shingles_py(t) for t in sms["text"]]
    mh = []
    for i, s in enumerate(sets):
        m = datasketch.MinHash(num_perm=num_perm, **LEGACY)
        m.update_batch([x.encode() for x in s])
        mh.append(m)
        if s:
            lsh.insert(i, m)
    candidates = set()
    for i, s in enumerate(sets):
        if s:
            candidates |= {(min(i, j), max(i, j)) for j in lsh.query(mh[i]) if j != i}
    est = {c: mh[c[0]].jaccard(mh[c[1]]) for c in candidates}
    exact = {c: len(sets[c[0]] & sets[c[1]]) / len(sets[c[0]] | sets[c[1]]) for c in candidates}
    ref_pairs = [c for c in candidates if est[c] >= threshold]
    ref_root = _components(len(sms), ref_pairs)

    # ours: the kept row of each cluster, from the duplicates (row numbers are 1-based)
    id_row = dict(zip([f"id-{r}" for r in sms["row"]], sms["row"] - 1))
    our_root = list(range(len(sms)))
    for d in dups:
        our_root[d[ROW] - 1] = id_row[d["kept_example_id"]]
    ref_clusters = {frozenset(np.flatnonzero(np.array(ref_root) == r)) for r in set(ref_root)}
    our_clusters = {frozenset(np.flatnonzero(np.array(our_root) == r)) for r in set(our_root)}
    differing = ref_clusters ^ our_clusters
    near_threshold = [c for c in candidates if abs(est[c] - threshold) <= 0.02]
    tp = sum(1 for c in ref_pairs if exact[c] >= threshold)
    relevant = sum(1 for c in candidates if exact[c] >= threshold)
    multi = [c for c in our_clusters if len(c) > 1]
    print(f"\nSMS near-dedup, weights {weights}: {len(sms)} rows, bands x rows = {bands} x {rows}, {len(candidates)} candidate pairs, "
          f"{len(ref_pairs)} verified; clusters (>1 row): ours {len(multi)}, datasketch "
          f"{sum(1 for c in ref_clusters if len(c) > 1)}; rows dropped {len(dups)}; differing clusters "
          f"{len(differing)}; candidate pairs within ±0.02 of the threshold {len(near_threshold)}; "
          f"vs exact Jaccard on the candidates: precision {tp / max(1, len(ref_pairs)):.3f}, "
          f"recall {tp / max(1, relevant):.3f}; largest band bucket {stats['largest_bucket']}")
    assert stats["candidate_pairs"] == len(candidates)
    assert stats["verified_pairs"] == len(ref_pairs)
    assert our_clusters == ref_clusters
    assert len(kept) + len(dups) == len(sms)
    assert stats["clusters"] == len(multi)
    # the kept row is the lowest row of its cluster, and similarity is an estimate ≥ threshold
    assert all(id_row[d["kept_example_id"]] < d[ROW] - 1 and d["similarity"] >= threshold for d in dups)
    assert all(d["reason"] == "near_duplicate" for d in dups)


def _planted(seed: int = 0, n_base: int = 300):
    """Base texts of 40 distinct words (sets of 38 3-shingles) and copies with 0-6 words replaced,
    at a Jaccard known from the shingle sets (1 word: 0.854, 2: 0.73 or 0.78, 3: ≤ 0.68)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(50_000)]
    base, copies = [], []
    for i in range(n_base):
        words = list(rng.choice(vocab, 40, replace=False))
        base.append(words)
        k = int(rng.integers(0, 7))
        copy = list(words)
        for pos in rng.choice(40, k, replace=False):
            copy[pos] = f"x{seed}_{i}_{pos}"
        copies.append(copy)
    texts = [" ".join(w) for w in base] + [" ".join(w) for w in copies]
    truth = []
    for i in range(n_base):
        a, b = _shingles_py(texts[i]), _shingles_py(texts[n_base + i])
        truth.append(len(a & b) / len(a | b))
    return texts, np.array(truth)


def test_planted_near_copies_recall_and_false_positives():
    threshold = 0.8
    recall_hits, recall_n, fp_hits, fp_n = 0, 0, 0, 0
    for seed in range(3):
        texts, truth = _planted(seed)
        n = len(truth)
        frame = pd.DataFrame({"text": texts, "row": np.arange(1, len(texts) + 1)})
        b, r = optimal_param(threshold, 128, 0.1, 0.9)   # the config's default weights
        spec = NearDedupSpec(columns=("text",), threshold=threshold, bands=b, rows=r, action="none")
        _, _, _, pairs = _run_stage(_batches(frame, 128), spec, buckets=3)
        found = {(p["a"] & ((1 << 40) - 1)) - 1 for p in pairs if (p["b"] & ((1 << 40) - 1)) - 1 - n
                 == (p["a"] & ((1 << 40) - 1)) - 1}
        above, below = truth >= threshold + 0.05, truth <= threshold - 0.05
        hit = np.array([i in found for i in range(n)])
        recall_hits += int(hit[above].sum())
        recall_n += int(above.sum())
        fp_hits += int(hit[below].sum())
        fp_n += int(below.sum())
    print(f"\nplanted: recall {recall_hits}/{recall_n}, false positives {fp_hits}/{fp_n}")
    assert recall_n > 100 and fp_n > 100
    assert recall_hits / recall_n >= 0.95
    assert fp_hits / fp_n <= 0.05


def test_boilerplate_bucket_over_the_cap_is_reported_and_bounded():
    texts = ["please call me back when you get this message ok"] * 60 + ["something else entirely here now"]
    frame = pd.DataFrame({"text": texts, "row": np.arange(1, len(texts) + 1)})
    spec = NearDedupSpec(columns=("text",), bands=9, rows=13, bucket_cap=8)
    kept, dups, stats, pairs = _run_stage(_batches(frame, 16), spec, buckets=2)
    assert stats["oversized_buckets"] == 9 and stats["largest_bucket"] == 60 and stats["oversized_bucket_rows"] == 540
    assert len(dups) == 59 and {d["kept_example_id"] for d in dups} == {"id-1"}
    assert len(pairs) <= 8 * 60       # anchors × members, not 60 · 59 / 2
    assert len(kept) == 2


def test_group_action_labels_clusters():
    texts = ["the cat sat on the mat today", "the cat sat on the mat today!", "a different line of text here"]
    frame = pd.DataFrame({"text": texts, "row": [1, 2, 3]})
    spec = NearDedupSpec(columns=("text",), action="group", threshold=0.5, bands=20, rows=5)
    import tempfile

    folder = tempfile.mkdtemp()
    with TestPipeline() as p:
        res = p | beam.Create(_batches(frame), reshuffle=False) | NearDeduplicate(spec, 2)
        res.rows | beam.Map(lambda b: _save(_rows_of(b, ["example_id", "_near_dup_group"]), folder, "rows"))
    collected = {"rows": [r for part in _load(folder, "rows") for r in part]}
    groups = {r["example_id"]: r["_near_dup_group"] for r in collected["rows"]}
    assert groups["id-1"] == groups["id-2"] != groups["id-3"]


# ---- in the pipeline (config → report, duplicates/, MLMD) --------------------------------------


def _sms_config(tmp_path, near, split=None):
    import yaml

    from pipeline.config import parse_config
    from tests.conftest import TESTS

    path = os.path.join(TESTS, "configs", "sms.yaml")
    data = yaml.safe_load(open(path))
    data["clean"]["near_dedup"] = near
    if split:
        data["split"].update(split)
    return parse_config(data, base_dir=os.path.dirname(path))


def _split_rows(out, names):
    frames = []
    for s in names:
        t = pq.read_table(os.path.join(out, "raw", s)).to_pandas()
        frames.append(t.assign(split=s))
    return pd.concat(frames, ignore_index=True)


def test_config_errors_name_the_field(tmp_path):
    from pipeline.config import ConfigError

    for near, message in [({"columns": ["nope"]}, "clean.near_dedup.columns: unknown column 'nope'"),
                          ({"columns": ["text"], "shingles": "lines:3"}, "clean.near_dedup.shingles"),
                          ({"columns": ["text"], "threshold": 1.5}, "clean.near_dedup.threshold"),
                          ({"columns": ["text"], "bands": 20, "rows": 10}, "bands x rows must be <= num_perm"),
                          ({"columns": ["text"], "action": "merge"}, "clean.near_dedup.action")]:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            _sms_config(tmp_path, near)


def test_config_hash_unchanged_without_near_dedup(tmp_path):
    """Configs without near_dedup hash as before it existed (reruns still match earlier runs)."""
    import hashlib

    cfg = _sms_config(tmp_path, None)
    data = cfg.model_dump(mode="json", by_alias=True)
    data["clean"].pop("near_dedup")
    # the other keys added later hash only when set, too (guard, report, labels.review,
    # clean.allow_non_finite, split.sticky, labels.ordinal, expect, output.formats, output.statistics):
    # what is left is the config as it was before them
    data.pop("guard")
    data.pop("report")
    data.pop("expect")
    data["clean"].pop("allow_non_finite")
    data["split"].pop("sticky")
    data["output"].pop("formats")
    data["output"].pop("statistics")
    if data.get("labels"):
        data["labels"].pop("review")
        data["labels"].pop("ordinal")
    for entry in data["inputs"]:   # csv.encoding and jsonl (issue 35)
        entry["csv"].pop("encoding")
        entry.pop("jsonl")
    assert cfg.config_hash == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def test_drop_on_sms_funnel_report_and_lineage(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.run import run

    cfg = _sms_config(tmp_path, {"columns": ["text"], "threshold": 0.8, "shingles": "words:3", "num_perm": 128,
                                 "action": "drop"})
    summary = run(cfg, output=str(tmp_path / "o"), store=str(tmp_path / "m.sqlite"))
    rows = summary["rows"]
    assert rows["input"] == rows["train"] + rows["test"] + rows["quarantined"] + rows["duplicates"]
    report = json.load(open(os.path.join(summary["output"], "report.json")))
    nd = report["near_dedup"]
    dups = pq.read_table(os.path.join(summary["output"], "duplicates")).to_pandas()
    assert list(dups.columns) == [f.name for f in DUP_SCHEMA]
    near = dups[dups["reason"] == "near_duplicate"]
    assert len(near) == nd["near_duplicates"] > 0
    assert (dups[dups["reason"] == "duplicate"]["similarity"] == 1.0).all()
    assert (near["similarity"] >= 0.8).all()
    assert nd["leakage"]["cross_split_pairs"] == 0      # only the first of each cluster is left
    print(f"\nSMS drop: {json.dumps({k: v for k, v in nd.items() if k != 'leakage'})}")
    c = metadata_store_pb2.ConnectionConfig()
    c.sqlite.filename_uri = str(tmp_path / "m.sqlite")
    store = metadata_store.MetadataStore(c)
    clean = [e for e in store.get_executions() if e.name.endswith(":clean")][0]
    assert clean.custom_properties["near_dedup.near_duplicates"].int_value == nd["near_duplicates"]
    assert clean.custom_properties["near_dedup.bands"].int_value == nd["bands"]
    assert clean.custom_properties["near_dedup.threshold"].double_value == 0.8


def test_none_reports_the_leak_and_group_closes_it(tmp_path):
    from pipeline.run import run

    names = ["train", "test"]
    leaks = {}
    for action in ("none", "group"):
        cfg = _sms_config(tmp_path, {"columns": ["text"], "action": action})
        summary = run(cfg, output=str(tmp_path / action), store=str(tmp_path / f"{action}.sqlite"))
        report = json.load(open(os.path.join(summary["output"], "report.json")))
        leaks[action] = report["near_dedup"]["leakage"]
        assert summary["rows"]["duplicates"] == report["rows"]["duplicates"]
        frame = _split_rows(summary["output"], names)
        assert "_near_dup_group" not in frame.columns and "_nd_node" not in frame.columns
    print(f"\nSMS leakage: none {leaks['none']}, group {leaks['group']}")
    assert leaks["none"]["across"]["train/test"] > 0
    assert leaks["group"]["across"]["train/test"] == 0


def test_group_with_group_by_keeps_both_together(tmp_path):
    """Near-duplicate clusters and split.group_by groups make one unit: neither spans two splits."""
    from pipeline.config import parse_config
    from pipeline.run import run

    rng = np.random.default_rng(5)
    vocab = [f"v{i}" for i in range(3000)]
    lines = ["user,text,label"]
    for i in range(400):
        words = list(rng.choice(vocab, 12, replace=False))
        lines.append(f"u{i % 150},{' '.join(words)},{'ab'[i % 2]}")
        if i % 16 == 0:   # a near-copy under another user
            words[3] = "changed"
            lines.append(f"u{(i * 7) % 150},{' '.join(words)},{'ab'[i % 2]}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    cfg = parse_config({"name": "g", "inputs": [{"path": str(tmp_path / "d.csv"), "format": "csv"}],
                        "schema": {"label": "label", "columns": {"user": "string", "text": "string",
                                                                 "label": "string"}},
                        "clean": {"near_dedup": {"columns": ["text"], "action": "group", "threshold": 0.4}},
                        "split": {"fractions": {"train": 0.5, "test": 0.5}, "group_by": "user"}})
    summary = run(cfg, output=str(tmp_path / "o"), store=str(tmp_path / "m.sqlite"))
    frame = _split_rows(summary["output"], ["train", "test"])
    assert len(frame) == summary["rows"]["input"]
    assert frame.groupby("user")["split"].nunique().max() == 1
    report = json.load(open(os.path.join(summary["output"], "report.json")))
    assert report["near_dedup"]["leakage"]["across"]["train/test"] == 0
    assert report["near_dedup"]["verified_pairs"] >= 23   # 25 planted at Jaccard 0.54


def test_same_clusters_on_1_and_n_shards_and_two_processes(tmp_path):
    from pipeline.run import run

    results = []
    for k, (shards, args) in enumerate([(1, []), (5, []), (2, ["--direct_num_workers", "2",
                                                               "--direct_running_mode", "multi_processing"])]):
        cfg = _sms_config(tmp_path, {"columns": ["text"], "action": "drop"})
        cfg.output.shards = shards
        summary = run(cfg, output=str(tmp_path / f"o{k}"), store=str(tmp_path / f"m{k}.sqlite"), beam_args=args)
        dups = pq.read_table(os.path.join(summary["output"], "duplicates")).to_pandas()
        frame = _split_rows(summary["output"], ["train", "test"])
        results.append((sorted(zip(dups["example_id"], dups["kept_example_id"], dups["similarity"])),
                        dict(zip(frame["example_id"], frame["split"]))))
    assert results[0] == results[1] == results[2]


def test_the_clusters_side_input_weighs_24_bytes_per_row_with_a_pair_and_is_bounded():
    """The union-find's result is a side input copied to every worker that applies it: its
    weight is stated (24 bytes per row that has a near-duplicate, whatever the rows without
    one) and bounded by max_nodes, past which the job fails naming the setting."""
    from transforms.clean.near_dedup import CLUSTER_BYTES_PER_NODE, UnionFind, clusters_bytes

    fn = UnionFind(max_nodes=1000)
    chains = pa.RecordBatch.from_pydict({"a": np.arange(0, 600, 2, dtype=np.int64),
                                         "b": np.arange(1, 601, 2, dtype=np.int64),
                                         "similarity": np.full(300, 0.9)})
    acc = fn.add_input(fn.create_accumulator(), chains)
    out = fn.extract_output(fn.merge_accumulators([acc, fn.create_accumulator()]))
    assert len(out["nodes"]) == 600 and clusters_bytes(out) == 600 * CLUSTER_BYTES_PER_NODE
    small = UnionFind(max_nodes=599)
    with pytest.raises(ValueError, match=r"clean.near_dedup: 600 rows have near-duplicates, more than max_nodes \(599\)"):
        small.extract_output(small.add_input(small.create_accumulator(), chains))
