"""The split stage: stratified train/dev/test (or k folds), exact and deterministic by seed."""

import json
from typing import Dict, NamedTuple, Optional, Sequence

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms.batches import (EXAMPLE_ID, METRICS_NAMESPACE, ROW, SOURCE, KeyedBatch, MergeCounts, as_batches,
                                concat_batches, drop_columns, hash_columns, key_by_bucket, set_column, split_by_key,
                                table_to_batches, value_counts)
from transforms.split.allocation import plan_split
from transforms.split.cuts import (INTERNAL, ROW_STRATUM, STRATUM, UNIT, UNIT_HASH, MergeBands, assign_splits,
                                   band_stats, thresholds_from, units, unit_hashes)
from transforms.spill import SpilledUntil

NULL_TOKEN = "<null>"


def stratum_keys(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    """One text key per row: the value of a single column, or a JSON list of several."""
    parts = [pc.fill_null(pc.cast(batch.column(c), pa.string()), NULL_TOKEN) for c in columns]
    if len(parts) == 1:
        return parts[0]
    quoted = [pc.binary_join_element_wise('"', pc.replace_substring(p, '"', '\\"'), '"', "") for p in parts]
    joined = pc.binary_join_element_wise(*quoted, ", ")
    return pc.binary_join_element_wise("[", joined, "]", "")


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
    return set_column(batch, UNIT_HASH, pa.array(hash_columns(batch, [EXAMPLE_ID], seed), pa.uint64()))


def group_units(table: pa.Table, group_by: str, columns: Sequence[str], seed: int) -> pa.Table:
    """Rows of whole groups → the same rows with the group's majority stratum, the
    group's hash and a representative-row flag.

    The majority stratum breaks ties by the smallest key; the representative row is the
    group's lowest (_source, _row). A null group value is a group of its own.
    """
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
                      (UNIT_HASH, pa.array(u, pa.uint64())), (UNIT, pa.array(first.to_numpy(), pa.bool_()))):
        out = set_column(out, name, arr)
    return out


def _by_group_bucket(batch: pa.RecordBatch, group_by: str, buckets: int):
    groups = pc.fill_null(pc.cast(batch.column(group_by), pa.string()), NULL_TOKEN)
    return key_by_bucket(batch, [groups], buckets)


def _actual(batch: pa.RecordBatch, name: str) -> Dict[str, int]:
    """Units per (split, allocation stratum) and, with groups, rows per (split, row stratum)."""
    out = {json.dumps([name, k]): v for k, v in value_counts(units(batch).column(STRATUM)).items()}
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


class EmptySplit(ValueError):
    """A split that must have rows (say, the one features are analysed on) has none."""


def require_rows(plan: Dict, names: Sequence[str], required: Dict[str, str]) -> Dict:
    """`plan`, unless it gives no unit to a split of `required` (split → error message)."""
    for name, message in required.items():
        if not sum(t[names.index(name)] for t in plan["targets"]):
            raise EmptySplit(message)
    return plan


class SplitResult(NamedTuple):
    """`StratifiedSplit`'s outputs."""

    splits: Dict[str, beam.PCollection]   # split name → record batches with the input's columns
    balance: beam.PCollection             # one dict: `balance_table(...)`, the `split` section of report.json


@beam.typehints.with_input_types(pa.RecordBatch)
class StratifiedSplit(beam.PTransform):
    """Clean batches → a `SplitResult`: the batches of each split, and the balance report.

    With `group_by`, the unit is a group: rows are shuffled by a hash bucket of the group
    (whole sub-batches), every group is stratified by its majority stratum and lands
    wholly in one split, and the exact counts hold for groups. Multi-column strata with
    fewer units than there are splits are merged into an "<other>" stratum per label.
    """

    def __init__(self, fractions: Dict[str, float], stratify_by: Sequence[str], seed: int,
                 group_by: Optional[str] = None, buckets: int = 16, require_rows: Optional[Dict[str, str]] = None,
                 spill: Optional[str] = None):
        super().__init__()
        self._spill = spill     # the rows wait for the thresholds as files there (`SpilledUntil`)
        self._require_rows = dict(require_rows or {})   # split → the error when the plan gives it no unit
        self._names = list(fractions)
        self._fractions = [fractions[n] for n in self._names]
        self._stratify_by = list(stratify_by)
        self._seed = seed
        self._group_by = group_by
        self._buckets = max(1, buckets)

    def expand(self, batches):
        if self._group_by:
            keyed = (batches
                     | "GroupBucket" >> beam.FlatMap(_by_group_bucket, self._group_by, self._buckets)
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
        sketch = keyed | "UnitHashes" >> beam.Map(unit_hashes).with_output_types(pa.RecordBatch)
        counts = (sketch
                  | "StratumCounts" >> beam.Map(lambda b: value_counts(b.column(STRATUM)))
                  | "SumCounts" >> beam.CombineGlobally(MergeCounts()))
        plan = counts | "Allocate" >> beam.Map(plan_split, self._fractions, merge_below)
        if self._require_rows:
            # every row waits for the plan (a side input of Assign): a split that must not be
            # empty fails the job here, before any row of any split exists downstream
            plan = plan | "RequireRows" >> beam.Map(require_rows, self._names, self._require_rows)
        stats = (sketch
                 | "BandStats" >> beam.Map(band_stats, pvalue.AsSingleton(plan))
                 | "MergeBands" >> beam.CombineGlobally(MergeBands()))
        # unsigned 64-bit hashes as Python ints: past the int64 of the coder an `int` hint picks
        thresholds = stats | "Thresholds" >> beam.Map(thresholds_from, pvalue.AsSingleton(plan)) \
            .with_output_types(beam.typehints.Any)
        waiting = keyed | "AwaitThresholds" >> SpilledUntil(self._spill, thresholds)
        parts = waiting | "Assign" >> beam.ParDo(
            _AssignFn(self._names), pvalue.AsSingleton(plan), pvalue.AsSingleton(thresholds)
        ).with_outputs(*self._names)
        as_batches(parts, *self._names)
        splits = {}
        actuals = []
        for name in self._names:
            splits[name] = (parts[name] | f"DropKeys[{name}]" >> beam.Map(drop_columns, INTERNAL)
                            .with_output_types(pa.RecordBatch))
            actuals.append(parts[name] | f"Actual[{name}]" >> beam.Map(_actual, name))
        actual = actuals | "FlattenActual" >> beam.Flatten() | "SumActual" >> beam.CombineGlobally(MergeCounts())
        balance = plan | "Balance" >> beam.Map(balance_table, pvalue.AsSingleton(actual), self._names,
                                               self._fractions, "groups" if self._group_by else "examples")
        return SplitResult(splits, balance)
