"""The leakage report of the near-dedup stage: verified near-duplicate pairs by the splits
their two rows landed in (`CrossSplitPairs`), after the split."""

from typing import Dict, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from transforms.batches import MergeCounts
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
