"""Split: stratified train/dev/test with exact per-stratum counts, deterministic by seed.

How it works, and what is guaranteed:
- Allocation (`allocate`): each stratum's count per split is the floor or the ceiling of
  its quota (n_stratum × fraction), each stratum's counts add up to its size, and the
  split totals are the largest-remainder rounding of N × fraction. This is matrix
  rounding, solved as a small flow problem over strata × splits.
- Assignment: every example gets a 64-bit hash of its example_id and the seed
  (`transforms.batches.hash_columns`).
  Within a stratum, examples in hash order fill the splits in config order. So the
  assignment does not depend on bundle order, sharding or runner, and adding rows moves
  an existing example only when a cut point moves past it.
- Scale: the cut points are exact order statistics found without gathering a stratum:
  one combine counts the strata; since hashes are uniform, the k-th smallest of n lies
  within ±10σ of k/n·2⁶⁴, so a second combine counts the hashes below that band and
  collects only those inside it (≈20·√n values per cut). Memory does not grow with n.
"""

from __future__ import annotations

import json
import math
from collections import deque
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms.batches import (EXAMPLE_ID, METRICS_NAMESPACE, KeyedBatch, MergeCounts, as_batches, concat_batches,
                                drop_columns, hash_columns, set_column, split_by_key, table_to_batches, value_counts)

STRATUM = "_stratum"          # the stratum the allocation uses (a group's majority stratum with groups)
ROW_STRATUM = "_row_stratum"   # with groups: each row's own stratum, for the example-level report
HASH = "_u"                    # seeded 64-bit hash of the unit (example or group)
UNIT = "_unit"                 # with groups: True on one representative row per group
INTERNAL = (STRATUM, ROW_STRATUM, HASH, UNIT)
NULL_TOKEN = "<null>"
OTHER = "<other>"
_TWO64 = float(2 ** 64)
_BAND_SIGMAS = 10.0


# ---- allocation (pure) ----------------------------------------------------------------------

def _exact(fractions: Sequence[float]) -> List[Fraction]:
    return [Fraction(f).limit_denominator(10 ** 9) for f in fractions]


def largest_remainder(n: int, fractions: Sequence[float]) -> List[int]:
    """Integer counts summing to n, each the floor or ceiling of n·f (Hamilton's method).

    Ties in the remainder go to the split listed first.
    """
    quotas = [n * f for f in _exact(fractions)]
    counts = [math.floor(q) for q in quotas]
    short = n - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda j: (-(quotas[j] - counts[j]), j))
    for j in by_remainder[:short]:
        counts[j] += 1
    return counts


def allocate(strata: Dict[str, int], fractions: Sequence[float]) -> Dict[str, List[int]]:
    """Per-stratum split counts: each within 1 of its quota, rows exact, split totals exact.

    Returns {stratum: [count per split]} in the order of `fractions`.
    """
    fr = _exact(fractions)
    keys = sorted(strata)
    quotas = {s: [strata[s] * f for f in fr] for s in keys}
    base = {s: [math.floor(q) for q in quotas[s]] for s in keys}
    extra = {s: strata[s] - sum(base[s]) for s in keys}
    total = sum(strata.values())
    targets = largest_remainder(total, fractions)
    capacity = [targets[j] - sum(base[s][j] for s in keys) for j in range(len(fr))]

    # Candidate (stratum, split) cells: those with a fractional quota, best remainder first.
    cands = {s: sorted((j for j in range(len(fr)) if quotas[s][j] != base[s][j]),
                       key=lambda j, s=s: (-(quotas[s][j] - base[s][j]), j)) for s in keys}
    used = {s: set() for s in keys}
    load = [0] * len(fr)
    for s in keys:  # greedy: Hamilton within the stratum while split capacity lasts
        for j in cands[s]:
            if len(used[s]) == extra[s]:
                break
            if load[j] < capacity[j]:
                used[s].add(j)
                load[j] += 1
    for s in keys:  # repair by augmenting paths until every stratum is whole
        while len(used[s]) < extra[s]:
            if not _augment(s, cands, used, load, capacity):
                # The exact split totals cannot be met together with the per-stratum bounds:
                # let each split take one more (totals stay within 1 of their quota).
                capacity = [c + 1 for c in capacity]
    return {s: [base[s][j] + (1 if j in used[s] else 0) for j in range(len(fr))] for s in keys}


def _augment(start: str, cands, used, load, capacity) -> bool:
    """One augmenting path from stratum `start` to a split with spare capacity."""
    parent: Dict[Tuple[str, object], Optional[Tuple[str, object]]] = {("s", start): None}
    queue = deque([("s", start)])
    holders: Dict[int, List[str]] = {}
    for s, js in used.items():
        for j in js:
            holders.setdefault(j, []).append(s)
    while queue:
        kind, node = queue.popleft()
        if kind == "s":
            for j in cands[node]:
                if j in used[node] or ("j", j) in parent:
                    continue
                parent[("j", j)] = (kind, node)
                if load[j] < capacity[j]:
                    _flip(("j", j), parent, used, load)
                    return True
                queue.append(("j", j))
        else:
            for s in sorted(holders.get(node, [])):
                if ("s", s) not in parent:
                    parent[("s", s)] = (kind, node)
                    queue.append(("s", s))
    return False


def _flip(end, parent, used, load) -> None:
    load[end[1]] += 1
    node = end
    while parent[node] is not None:
        prev = parent[node]
        if prev[0] == "s":       # stratum → split: take the cell
            used[prev[1]].add(node[1])
        else:                    # split → stratum: give the cell back
            used[node[1]].discard(prev[1])
        node = prev


# ---- thresholds (pure) ----------------------------------------------------------------------

def band(k: int, n: int) -> Tuple[int, int]:
    """A hash interval [lo, hi] that holds the k-th smallest of n uniform 64-bit hashes."""
    p = k / n
    width = _BAND_SIGMAS * math.sqrt(max(p * (1 - p), 1.0 / n) / n) + 2.0 / n
    lo = max(0.0, (p - width) * _TWO64)
    hi = min(_TWO64 - 1, (p + width) * _TWO64)
    lo_i = 0 if lo <= 0 else int(lo)
    hi_i = 2 ** 64 - 1 if hi >= _TWO64 - 1 else int(hi)
    return lo_i, hi_i


def merge_small_strata(counts: Dict[str, int], min_size: int) -> Dict[str, str]:
    """{stratum: stratum it is allocated as}. A multi-column stratum with fewer than
    `min_size` units joins the "<other>" stratum of its first column's value (its label);
    single-column strata are never merged (they are the label itself)."""
    mapping = {}
    for key, n in counts.items():
        if n < min_size and key.startswith("["):
            first = json.loads(key)[0]
            mapping[key] = json.dumps([first, OTHER])
        else:
            mapping[key] = key
    return mapping


def plan_split(counts: Dict[str, int], fractions: Sequence[float], merge_below: int = 0) -> Dict:
    """Targets and cut ranks per stratum, with the search band of each cut.

    Strata smaller than `merge_below` are merged first (`merge_small_strata`); the plan
    keeps the mapping so rows are looked up by their own stratum key.
    """
    mapping = merge_small_strata(counts, merge_below)
    merged: Dict[str, int] = {}
    for key, n in counts.items():
        merged[mapping[key]] = merged.get(mapping[key], 0) + n
    counts = merged
    targets = allocate(counts, fractions)
    strata = sorted(counts)
    cuts, bands = [], []
    for s in strata:
        ranks = list(np.cumsum(targets[s])[:-1])
        cuts.append([int(k) for k in ranks])
        bands.append([band(int(k), counts[s]) if 0 < k < counts[s] else (0, 0) for k in ranks])
    position = {s: i for i, s in enumerate(strata)}
    return {"strata": strata, "counts": [counts[s] for s in strata], "targets": [targets[s] for s in strata],
            "cuts": cuts, "bands": bands, "index": {k: position[v] for k, v in mapping.items()},
            "merged": {k: v for k, v in sorted(mapping.items()) if k != v}}


def _units(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The rows that stand for a unit (all rows, unless grouped)."""
    return batch.filter(batch.column(UNIT)) if UNIT in batch.schema.names else batch


def _unit_hashes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The (stratum, hash) columns of a batch's units."""
    units = _units(batch)
    return pa.RecordBatch.from_arrays([units.column(STRATUM), units.column(HASH)], names=[STRATUM, HASH])


def band_stats(batch: pa.RecordBatch, plan: Dict) -> Dict[Tuple[int, int], Tuple[int, np.ndarray]]:
    """{(stratum index, cut index): (unit hashes below the band, those inside it)} for a batch."""
    batch = _units(batch)
    codes = _stratum_codes(batch, plan["index"])
    u = batch.column(HASH).to_numpy()
    out = {}
    for code, positions in _group_positions(codes):
        uu = u[positions]
        for c, (k, (lo, hi)) in enumerate(zip(plan["cuts"][code], plan["bands"][code])):
            if k <= 0 or k >= plan["counts"][code]:
                continue
            lo_u, hi_u = np.uint64(lo), np.uint64(hi)
            inside = (uu >= lo_u) & (uu <= hi_u)
            out[(code, c)] = (int((uu < lo_u).sum()), np.sort(uu[inside]))
    return out


def thresholds_from(stats: Dict[Tuple[int, int], Tuple[int, np.ndarray]], plan: Dict) -> List[List[Optional[int]]]:
    """Per stratum and cut, the hash value t with exactly k hashes below it (None: no cut)."""
    out = []
    for code, cuts in enumerate(plan["cuts"]):
        row = []
        for c, k in enumerate(cuts):
            n = plan["counts"][code]
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
                    f"{_BAND_SIGMAS:.0f}-sigma band (rank {k} of {n}); the example ids may not be distinct")
            row.append(int(values[r]))
        out.append(row)
    return out


def assign_splits(batch: pa.RecordBatch, plan: Dict, thresholds: List[List[Optional[int]]]) -> np.ndarray:
    """The split index of every row: the number of cuts at or below its hash."""
    codes = _stratum_codes(batch, plan["index"])
    u = batch.column(HASH).to_numpy()
    width = max((len(t) for t in thresholds), default=0)
    t = np.zeros((len(thresholds), max(width, 1)), np.uint64)
    active = np.zeros_like(t, dtype=bool)
    for i, row in enumerate(thresholds):
        for c, v in enumerate(row):
            if v is not None:
                t[i, c], active[i, c] = v, True
    ge = (u[:, None] >= t[codes]) & active[codes]
    return ge.sum(axis=1).astype(np.int64)


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


def stratum_keys(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    """One text key per row: the value of a single column, or a JSON list of several."""
    parts = [pc.fill_null(pc.cast(batch.column(c), pa.string()), NULL_TOKEN) for c in columns]
    if len(parts) == 1:
        return parts[0]
    quoted = [pc.binary_join_element_wise('"', pc.replace_substring(p, '"', '\\"'), '"', "") for p in parts]
    joined = pc.binary_join_element_wise(*quoted, ", ")
    return pc.binary_join_element_wise("[", joined, "]", "")


# ---- the PTransform -------------------------------------------------------------------------

class _MergeBands(beam.CombineFn):
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


class _AssignFn(beam.DoFn):
    def __init__(self, names: Sequence[str]):
        self._names = list(names)
        self._counters = {n: Metrics.counter(METRICS_NAMESPACE, f"split.{n}") for n in names}

    def process(self, batch, plan, thresholds):
        which = assign_splits(batch, plan, thresholds)
        for idx, part in split_by_key(batch, which):
            name = self._names[idx]
            self._counters[name].inc(part.num_rows)
            yield pvalue.TaggedOutput(name, part)


def _with_keys(batch: pa.RecordBatch, columns: Sequence[str], seed: int) -> pa.RecordBatch:
    batch = set_column(batch, STRATUM, stratum_keys(batch, columns))
    return set_column(batch, HASH, pa.array(hash_columns(batch, [EXAMPLE_ID], seed), pa.uint64()))


def group_units(table: pa.Table, group_by: str, columns: Sequence[str], seed: int) -> pa.Table:
    """Rows of whole groups → the same rows with the group's majority stratum, the
    group's hash and a representative-row flag.

    The majority stratum breaks ties by the smallest key; the representative row is the
    group's lowest (_source, _row). A null group value is a group of its own.
    """
    from transforms.batches import ROW, SOURCE

    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, sort_keys=[(SOURCE, "ascending"), (ROW, "ascending")])
    table = table.take(order)
    batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    row_stratum = stratum_keys(batch, columns)
    groups = pc.fill_null(pc.cast(table.column(group_by), pa.string()), NULL_TOKEN).combine_chunks()
    frame = pd.DataFrame({"g": groups.to_pandas(), "s": row_stratum.to_pandas()})
    sizes = frame.groupby(["g", "s"], sort=True).size().rename("n").reset_index()
    sizes = sizes.sort_values(["g", "n", "s"], ascending=[True, False, True])
    majority = sizes.drop_duplicates("g").set_index("g")["s"]
    unit_stratum = frame["g"].map(majority)
    first = ~frame["g"].duplicated(keep="first")
    u = hash_columns(pa.table({"g": groups}), ["g"], seed)
    out = table
    for name, arr in ((ROW_STRATUM, row_stratum), (STRATUM, pa.array(unit_stratum.to_numpy(), pa.string())),
                      (HASH, pa.array(u, pa.uint64())), (UNIT, pa.array(first.to_numpy(), pa.bool_()))):
        idx = out.schema.get_field_index(name)
        out = out.set_column(idx, name, arr) if idx >= 0 else out.append_column(name, arr)
    return out


class _GroupBucketFn(beam.DoFn):
    def __init__(self, group_by: str, buckets: int):
        self._group_by = group_by
        self._buckets = buckets

    def process(self, batch: pa.RecordBatch):
        groups = pa.table({"g": pc.fill_null(pc.cast(batch.column(self._group_by), pa.string()), NULL_TOKEN)})
        yield from split_by_key(batch, (hash_columns(groups, ["g"]) % np.uint64(self._buckets)).astype(np.int64))


def _actual(batch: pa.RecordBatch, name: str) -> Dict[str, int]:
    """Units per (split, allocation stratum) and, with groups, rows per (split, row stratum)."""
    units = _units(batch)
    out = {json.dumps([name, k]): v for k, v in value_counts(units.column(STRATUM)).items()}
    if ROW_STRATUM in batch.schema.names:
        out.update({json.dumps(["rows", name, k]): v for k, v in value_counts(batch.column(ROW_STRATUM)).items()})
    return out


def balance_table(plan: Dict, actual: Dict[str, int], names: Sequence[str], fractions: Sequence[float] = (),
                  unit: str = "examples") -> Dict:
    """The reviewer's table: per stratum and split, target vs actual count and proportion.

    With groups the table counts groups (the unit allocated), and `examples` adds the
    row-level balance: per split and row stratum, rows vs their share of the total.
    """
    index_of = {}
    for key, i in plan["index"].items():
        index_of.setdefault(plan["strata"][i], []).append(key)
    rows, worst = [], 0.0
    for s, n, targets in zip(plan["strata"], plan["counts"], plan["targets"]):
        for name, target in zip(names, targets):
            got = sum(actual.get(json.dumps([name, k]), 0) for k in index_of.get(s, [s]))
            worst = max(worst, abs(got - target))
            rows.append({"stratum": s, "split": name, "n": n, "target": target, "actual": got,
                         "proportion": round(got / n, 6) if n else 0.0})
    totals = {name: sum(t[j] for t in plan["targets"]) for j, name in enumerate(names)}
    out = {"unit": unit, "strata": rows, "targets": totals, "largest_deviation": worst, "merged_strata": plan["merged"]}
    row_counts = {tuple(json.loads(k)[1:]): v for k, v in actual.items() if k.startswith('["rows"')}
    if row_counts:
        by_stratum: Dict[str, int] = {}
        for (_, s), v in row_counts.items():
            by_stratum[s] = by_stratum.get(s, 0) + v
        examples = []
        for s, total in sorted(by_stratum.items()):
            for name, f in zip(names, fractions):
                got = row_counts.get((name, s), 0)
                examples.append({"stratum": s, "split": name, "n": total, "target": round(total * f, 3),
                                 "actual": got, "proportion": round(got / total, 6)})
        out["examples"] = examples
        out["examples_largest_deviation"] = max((abs(e["actual"] - e["target"]) for e in examples), default=0.0)
    return out


class StratifiedSplit(beam.PTransform):
    """Clean batches → one PCollection of batches per split name, plus a balance report.

    Returns a dict: {split name: PCollection[RecordBatch], "_report": PCollection[dict]}
    where the report (one element) is `balance_table(...)`. Output batches have the
    input's columns (the internal ones are removed).

    With `group_by`, the unit is a group: rows are shuffled by a hash bucket of the group
    (whole sub-batches), every group is stratified by its majority stratum and lands
    wholly in one split, and the exact counts hold for groups. Multi-column strata with
    fewer units than there are splits are merged into an "<other>" stratum per label.
    """

    def __init__(self, fractions: Dict[str, float], stratify_by: Sequence[str], seed: int,
                 group_by: Optional[str] = None, buckets: int = 16):
        super().__init__()
        self._names = list(fractions)
        self._fractions = [fractions[n] for n in self._names]
        self._stratify_by = list(stratify_by)
        self._seed = seed
        self._group_by = group_by
        self._buckets = max(1, buckets)

    def expand(self, batches):
        if self._group_by:
            keyed = (batches
                     | "GroupBucket" >> beam.ParDo(_GroupBucketFn(self._group_by, self._buckets))
                     .with_output_types(KeyedBatch)
                     | "GatherGroups" >> beam.GroupByKey()
                     | "GroupUnits" >> beam.FlatMap(
                         lambda kv, g, cols, seed: table_to_batches(group_units(concat_batches(kv[1]), g, cols, seed)),
                         self._group_by, self._stratify_by, self._seed))
        else:
            keyed = batches | "HashAndStratum" >> beam.Map(_with_keys, self._stratify_by, self._seed) \
                .with_output_types(pa.RecordBatch)
        merge_below = sum(1 for f in self._fractions if f > 0)
        # The statistics passes read each unit's (stratum, hash) only: computed beside the
        # rows, it is all that is kept for them, while the rows wait for the thresholds.
        sketch = keyed | "UnitHashes" >> beam.Map(_unit_hashes).with_output_types(pa.RecordBatch)
        counts = (sketch
                  | "StratumCounts" >> beam.Map(lambda b: value_counts(b.column(STRATUM)))
                  | "SumCounts" >> beam.CombineGlobally(MergeCounts()))
        plan = counts | "Allocate" >> beam.Map(plan_split, self._fractions, merge_below)
        stats = (sketch
                 | "BandStats" >> beam.Map(band_stats, pvalue.AsSingleton(plan))
                 | "MergeBands" >> beam.CombineGlobally(_MergeBands()))
        thresholds = stats | "Thresholds" >> beam.Map(thresholds_from, pvalue.AsSingleton(plan))
        parts = keyed | "Assign" >> beam.ParDo(
            _AssignFn(self._names), pvalue.AsSingleton(plan), pvalue.AsSingleton(thresholds)
        ).with_outputs(*self._names)
        as_batches(parts, *self._names)
        out = {}
        actuals = []
        for name in self._names:
            out[name] = (parts[name] | f"DropKeys[{name}]" >> beam.Map(drop_columns, INTERNAL)
                         .with_output_types(pa.RecordBatch))
            actuals.append(parts[name] | f"Actual[{name}]" >> beam.Map(_actual, name))
        actual = actuals | "FlattenActual" >> beam.Flatten() | "SumActual" >> beam.CombineGlobally(MergeCounts())
        out["_report"] = plan | "Balance" >> beam.Map(balance_table, pvalue.AsSingleton(actual), self._names,
                                                      self._fractions, "groups" if self._group_by else "examples")
        return out
