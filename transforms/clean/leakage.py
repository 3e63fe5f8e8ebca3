"""The leakage report of the near-dedup stage: verified near-duplicate pairs by the splits
their two rows landed in (`CrossSplitPairs`), after the split."""

from typing import Dict, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from transforms.batches import MergeCounts, hash_columns, split_by_key
from transforms.clean.near_dedup import NODE, _lookup_ids, _SortedTable


def _split_nodes(batch: pa.RecordBatch, index: int, clusters: Dict) -> pa.RecordBatch:
    nodes = batch.column(NODE).to_numpy()
    keep = np.isin(nodes, clusters["nodes"])
    return pa.RecordBatch.from_arrays([pa.array(nodes[keep]), pa.array(np.full(int(keep.sum()), index), pa.int64())],
                                      names=["node", "id"])


def _pair_splits(batch: pa.RecordBatch, where: pa.Table, names: Sequence[str]) -> Dict[str, int]:
    split_of = where.column("id").to_numpy()

    def locate(nodes: np.ndarray) -> np.ndarray:
        found, pos = _lookup_ids(where, nodes)
        return np.where(found, split_of[pos] if len(split_of) else -1, -1)

    sa, sb = locate(batch.column("a").to_numpy()), locate(batch.column("b").to_numpy())
    ok = (sa >= 0) & (sb >= 0)
    if not ok.any():
        return {}
    lo, hi = np.minimum(sa[ok], sb[ok]), np.maximum(sa[ok], sb[ok])
    pairs, counts = np.unique(np.stack([lo, hi], axis=1), axis=0, return_counts=True)
    return {f"{names[i]}/{names[j]}": int(c) for (i, j), c in zip(pairs, counts)}


class CrossSplitPairs(beam.PTransform):
    """(splits, verified pairs, clusters) → one dict {"train/test": pairs, "train/train": ...}:
    near-duplicate pairs by the splits their two rows landed in (only rows that have a pair
    are looked up, so the map held is as large as the union-find's)."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self._names = list(names)

    def expand(self, inputs):
        splits, pairs, clusters = inputs
        located = [splits[n] | f"Locate[{n}]" >> beam.Map(_split_nodes, i, pvalue.AsSingleton(clusters))
                   for i, n in enumerate(self._names)]
        where = located | "AllLocated" >> beam.Flatten() | "WhereTable" >> beam.CombineGlobally(_SortedTable())
        counts = (pairs | "PairSplits" >> beam.Map(_pair_splits, pvalue.AsSingleton(where), self._names)
                  | "SumPairSplits" >> beam.CombineGlobally(MergeCounts()))
        return counts | "Leakage" >> beam.Map(leakage_table, self._names)


def leakage_table(counts: Dict[str, int], names: Sequence[str]) -> Dict:
    """Per pair of splits, the near-duplicate pairs across them, and the pairs within each."""
    across = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            across[f"{a}/{b}"] = int(counts.get(f"{a}/{b}", 0))
    within = {n: int(counts.get(f"{n}/{n}", 0)) for n in names}
    return {"across": across, "within": within, "cross_split_pairs": sum(across.values())}


# ---- exact leakage: the same example id, row or group value in two splits --------------------

LEAK_KINDS = ("example_id", "rows", "groups")


def _leak_keys(batch: pa.RecordBatch, split: int, checks: Dict[str, Sequence[str]], buckets: int):
    """(bucket, batch of (kind, hash, split)) for each bucket of the row hashes of every check:
    8 bytes per row and check cross the shuffle, not the rows."""
    if batch.num_rows == 0:
        return
    kinds, hashes = [], []
    for k, (kind, columns) in enumerate(sorted(checks.items())):
        hashes.append(hash_columns(batch, list(columns), seed=f"leak:{kind}"))
        kinds.append(np.full(batch.num_rows, k, np.int8))
    h, kind = np.concatenate(hashes), np.concatenate(kinds)
    keys = pa.RecordBatch.from_arrays([pa.array(kind), pa.array(h), pa.array(np.full(len(h), split, np.int16))],
                                      names=["kind", "hash", "split"])
    yield from split_by_key(keys, (h % np.uint64(buckets)).astype(np.int64))     # equal hashes, one bucket


def _leaks_in_bucket(element, names: Sequence[str]) -> Dict[str, int]:
    """{kind: distinct values (of this bucket) found in two splits or more}."""
    _, batches = element
    table = pa.Table.from_batches(list(batches))
    if table.num_rows == 0:
        return {}
    kind, h, split = (table.column(c).to_numpy() for c in ("kind", "hash", "split"))
    triples = np.unique(np.stack([kind.astype(np.uint64), h, split.astype(np.uint64)], axis=1), axis=0)
    values, splits_per_value = np.unique(triples[:, :2], axis=0, return_counts=True)
    leaked = values[splits_per_value > 1]
    counts = np.bincount(leaked[:, 0].astype(np.int64), minlength=len(names))
    return {names[k]: int(c) for k, c in enumerate(counts) if c}


class CrossSplitLeaks(beam.PTransform):
    """{split: batches} → one dict {check: values found in two splits or more} (0 for none).

    `checks` names each check's key columns: `example_id` ([example_id]), `rows` (the data
    columns: an exact duplicate row), `groups` ([split.group_by]). Each row's key is a 64-bit
    hash, shuffled by hash bucket as small batches of (check, hash, split); a value leaks when
    its rows sit in two splits or more. A hash collision could count a value that does not leak
    (about n²/2⁶⁵ of them for n rows: 3·10⁻⁶ at ten million)."""

    def __init__(self, checks: Dict[str, Sequence[str]], buckets: int = 16):
        super().__init__()
        unknown = set(checks) - set(LEAK_KINDS)
        if unknown:
            raise ValueError(f"unknown leakage checks {sorted(unknown)}; expected some of {LEAK_KINDS}")
        self._checks = {k: tuple(v) for k, v in checks.items()}
        self._buckets = max(1, buckets)

    def expand(self, splits):
        names = sorted(self._checks)
        keyed = [pcoll | f"LeakKeys[{name}]" >> beam.FlatMap(_leak_keys, i, self._checks, self._buckets)
                 for i, (name, pcoll) in enumerate(sorted(splits.items()))]
        return (keyed
                | "AllLeakKeys" >> beam.Flatten()
                | "GroupLeakKeys" >> beam.GroupByKey()
                | "LeaksPerBucket" >> beam.Map(_leaks_in_bucket, names)
                | "SumLeaks" >> beam.CombineGlobally(MergeCounts())
                | "EveryCheck" >> beam.Map(lambda found: {k: int(found.get(k, 0)) for k in names}))
