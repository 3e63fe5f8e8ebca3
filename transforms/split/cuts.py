"""Where the cut points are, from the units' hashes, and which split each row gets.

Within a stratum, units in hash order fill the splits in config order. The k-th smallest
of n uniform hashes lies within ±10σ of k/n·2⁶⁴, so one combine counts the hashes below
that band and collects only those inside it (`band_stats`, merged by `MergeBands`); the
threshold of each cut is then exact (`thresholds_from`) and a row's split is the number
of thresholds at or below its hash (`assign_splits`).

Sticky splits: a unit with a previous split (`PREVIOUS`, the index of the split it had in
the earlier run) keeps it; the cuts are found among the other units (the plan's `pool`),
which alone go through the bands.
"""

from typing import Dict, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import value_counts
from transforms.split.allocation import BAND_SIGMAS

STRATUM = "_stratum"          # the stratum the allocation uses (a group's majority stratum with groups)
ROW_STRATUM = "_row_stratum"   # with groups: each row's own stratum, for the example-level report
UNIT_HASH = "_unit_hash"       # seeded 64-bit hash of the unit (example or group)
UNIT = "_unit"                 # with groups: True on one representative row per group
PREVIOUS = "_previous_split"   # sticky: the index of the unit's split in the earlier run, null for a new unit
INTERNAL = (STRATUM, ROW_STRATUM, UNIT_HASH, UNIT, PREVIOUS)   # removed before the splits leave the stage


def units(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The rows that stand for a unit (all rows, unless grouped)."""
    return batch.filter(batch.column(UNIT)) if UNIT in batch.schema.names else batch


def unit_hashes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The (stratum, hash) columns of a batch's units (and their previous split, if sticky)."""
    kept = units(batch)
    names = [STRATUM, UNIT_HASH] + ([PREVIOUS] if PREVIOUS in kept.schema.names else [])
    return pa.RecordBatch.from_arrays([kept.column(n) for n in names], names=names)


def kept_counts(batch: pa.RecordBatch) -> Dict[str, int]:
    """Sticky: {`kept_key(split, stratum)`: units} of the units of `unit_hashes` that have a
    previous split."""
    kept = batch.filter(pc.is_valid(batch.column(PREVIOUS)))
    if not kept.num_rows:
        return {}
    keys = pc.binary_join_element_wise(pc.cast(kept.column(PREVIOUS), pa.string()), kept.column(STRATUM), "\t")
    return value_counts(keys)


def pool(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The units the cuts are found among: all, or (sticky) those without a previous split."""
    return batch.filter(pc.is_null(batch.column(PREVIOUS))) if PREVIOUS in batch.schema.names else batch


def band_stats(batch: pa.RecordBatch, plan: Dict) -> Dict[Tuple[int, int], Tuple[int, np.ndarray]]:
    """{(stratum index, cut index): (unit hashes below the band, those inside it)} for a batch."""
    batch = pool(units(batch))
    codes = _stratum_codes(batch, plan["index"])
    u = batch.column(UNIT_HASH).to_numpy()
    out = {}
    for code, positions in _group_positions(codes):
        uu = u[positions]
        for c, (k, (lo, hi)) in enumerate(zip(plan["cuts"][code], plan["bands"][code])):
            if k <= 0 or k >= plan["pool"][code]:
                continue
            lo_u, hi_u = np.uint64(lo), np.uint64(hi)
            inside = (uu >= lo_u) & (uu <= hi_u)
            out[(code, c)] = (int((uu < lo_u).sum()), np.sort(uu[inside]))
    return out


def thresholds_from(stats: Dict[Tuple[int, int], Tuple[int, np.ndarray]], plan: Dict) -> List[List[Optional[int]]]:
    """Per stratum and cut, the hash value t with exactly k hashes of the pool below it (None: no cut)."""
    out = []
    for code, cuts in enumerate(plan["cuts"]):
        row = []
        for c, k in enumerate(cuts):
            n = plan["pool"][code]
            if k <= 0:
                row.append(0)
                continue
            if k >= n:
                row.append(None)
                continue
            below, values = stats.get((code, c), (0, np.zeros(0, np.uint64)))
            r = k - below
            if not 0 <= r < len(values):
                raise RuntimeError(
                    f"split: the cut for stratum {plan['strata'][code]!r} fell outside its "
                    f"{BAND_SIGMAS:.0f}-sigma band (rank {k} of {n}); the example ids may not be distinct")
            row.append(int(values[r]))
        out.append(row)
    return out


def assign_splits(batch: pa.RecordBatch, plan: Dict, thresholds: List[List[Optional[int]]]) -> np.ndarray:
    """The split index of every row: its previous split (sticky), else the number of cuts at
    or below its hash."""
    codes = _stratum_codes(batch, plan["index"])
    u = batch.column(UNIT_HASH).to_numpy()
    width = max((len(t) for t in thresholds), default=0)
    t = np.zeros((len(thresholds), max(width, 1)), np.uint64)
    active = np.zeros_like(t, dtype=bool)
    for i, row in enumerate(thresholds):
        for c, v in enumerate(row):
            if v is not None:
                t[i, c], active[i, c] = v, True
    ge = (u[:, None] >= t[codes]) & active[codes]
    which = ge.sum(axis=1).astype(np.int64)
    if PREVIOUS in batch.schema.names:
        previous = batch.column(PREVIOUS)
        had = pc.is_valid(previous).to_numpy(zero_copy_only=False)
        which = np.where(had, pc.fill_null(previous, 0).to_numpy(zero_copy_only=False).astype(np.int64), which)
    return which


def _stratum_codes(batch: pa.RecordBatch, index: Dict[str, int]) -> np.ndarray:
    enc = pc.dictionary_encode(batch.column(STRATUM))
    lookup = np.array([index[k] for k in enc.dictionary.to_pylist()], np.int64)
    return lookup[enc.indices.to_numpy(zero_copy_only=False)]


def _group_positions(codes: np.ndarray):
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    for part in np.split(order, bounds):
        if len(part):
            yield int(codes[part[0]]), part


class MergeBands(beam.CombineFn):
    """Merges `band_stats` of many batches: counts below each band add up, values inside concatenate."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, stats):
        return self.merge_accumulators([acc, stats])

    def merge_accumulators(self, accs):
        out: Dict = {}
        for acc in accs:
            for key, (below, values) in acc.items():
                b0, v0 = out.get(key, (0, np.zeros(0, np.uint64)))
                out[key] = (b0 + below, np.concatenate([v0, values]))
        return out

    def extract_output(self, acc):
        return {k: (b, np.sort(v)) for k, (b, v) in acc.items()}
