"""The split stage: stratified train/dev/test (or k folds), exact and deterministic by seed.

Sticky splits (`previous`): the example ids of an earlier run's splits are read from its
Parquet files (the `example_id` column only) and joined to the rows by a keyed shuffle of
sub-batches (a hash bucket of the id, as every shuffle here), so that each row carries the
index of the split it had (`PREVIOUS`); kept units stay there and only the new ones are
allocated (`plan_split(kept=...)`).
"""

import json
from typing import Dict, List, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms.batches import (EXAMPLE_ID, METRICS_NAMESPACE, ROW, SOURCE, Bucketed, KeyedBatch, MergeCounts,
                                as_batches, bucketed, concat_batches, drop_columns, hash_columns, key_by_bucket, set_column,
                                split_by_key, table_to_batches, value_counts)
from transforms.split.allocation import plan_split
from transforms.split.cuts import (INTERNAL, PREVIOUS, ROW_STRATUM, STRATUM, UNIT, UNIT_HASH, MergeBands,
                                   assign_splits, band_stats, kept_counts, thresholds_from, units, unit_hashes)
from transforms.spill import GroupBySpilled, SpilledUntil

PREVIOUS_TYPE = pa.int16()     # a split index (k-fold has up to 1000 splits)

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
    if PREVIOUS in table.schema.names:
        # sticky: a group keeps the split its members had; if they had several (the grouping
        # changed), the first in config order, so that none of them leaves train
        frame["p"] = table.column(PREVIOUS).to_pandas()
        group_previous = frame["g"].map(frame.groupby("g")["p"].min())
        out = set_column(out, PREVIOUS, pa.array(group_previous.to_numpy(), PREVIOUS_TYPE, from_pandas=True))
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
    sticky = "kept" in plan
    for i, (s, n, targets) in enumerate(zip(plan["strata"], plan["counts"], plan["targets"])):
        for j, (name, target) in enumerate(zip(names, targets)):
            got = sum(actual.get(json.dumps([name, k]), 0) for k in index_of.get(s, [s]))
            worst = max(worst, abs(got - target))
            rows.append({"stratum": s, "split": name, "n": n, "target": target, "actual": got,
                         "proportion": round(got / n, 6) if n else 0.0})
            if sticky:
                rows[-1].update(kept=plan["kept"][i][j], new=plan["new"][i][j])
    totals = {name: sum(t[j] for t in plan["targets"]) for j, name in enumerate(names)}
    out = {"unit": unit, "strata": rows, "targets": totals, "largest_deviation": worst, "merged_strata": plan["merged"]}
    if sticky:
        got_totals = {name: sum(r["actual"] for r in rows if r["split"] == name) for name in names}
        out["sticky"] = {
            "kept": {name: sum(k[j] for k in plan["kept"]) for j, name in enumerate(names)},
            "new": {name: sum(k[j] for k in plan["new"]) for j, name in enumerate(names)},
            "deviation": {name: got_totals[name] - totals[name] for name in names},
            "largest_deviation": worst,
            "deviating_cells": sum(1 for r in rows if r["actual"] != r["target"]),
        }
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


def previous_split_batch(table: pa.Table, index: int) -> pa.RecordBatch:
    """The example ids of one split of the earlier run (a table read from its Parquet files)
    → (example_id, PREVIOUS) with the split's index in this run's split order."""
    ids = table.column(EXAMPLE_ID).combine_chunks() if table.num_rows else pa.array([], pa.string())
    return pa.RecordBatch.from_arrays([ids, pa.array(np.full(len(ids), index, np.int16), PREVIOUS_TYPE)],
                                      names=[EXAMPLE_ID, PREVIOUS])


def with_previous(rows: Sequence[pa.RecordBatch], previous: Sequence[pa.RecordBatch]) -> List[pa.RecordBatch]:
    """The row batches of one id bucket, each with the PREVIOUS column: the split index its
    example_id had among `previous` (the earlier run's ids of the same bucket), else null."""
    known = concat_batches(previous, pa.schema([(EXAMPLE_ID, pa.string()), (PREVIOUS, PREVIOUS_TYPE)]))
    out = []
    for batch in rows:
        if not batch.num_rows:
            continue
        at = pc.index_in(batch.column(EXAMPLE_ID), value_set=known.column(EXAMPLE_ID).combine_chunks())
        out.append(set_column(batch, PREVIOUS, pc.take(known.column(PREVIOUS).combine_chunks(), at)))
    return out


def _join_previous(element) -> List[pa.RecordBatch]:
    _, batches = element
    rows, previous = [], []
    for b in batches:   # the earlier run's ids are the batches with exactly the two columns
        (previous if b.schema.names == [EXAMPLE_ID, PREVIOUS] else rows).append(b)
    return with_previous(rows, previous)


def _by_id(batch: pa.RecordBatch, buckets: int) -> Bucketed:
    return bucketed(batch, [batch.column(EXAMPLE_ID)], buckets)


@beam.typehints.with_input_types(pa.RecordBatch)
@beam.typehints.with_output_types(pa.RecordBatch)
class AttachPreviousSplits(beam.PTransform):
    """Clean batches → the same rows with PREVIOUS, the index (in `names`) of the split each
    example had in an earlier run, null for an example that was in none of them.

    `previous` maps a split name to the file pattern of that split's Parquet files in the
    earlier run; only its `example_id` column is read (Beam's Parquet source), and names
    that are not in `names` are not read (their examples are new here). Both sides are
    shuffled by a hash bucket of the example id as whole sub-batches (through files with
    `spill`), so no worker holds more than a bucket of rows and one bucket of old ids."""

    def __init__(self, previous: Dict[str, str], names: Sequence[str], buckets: int = 16,
                 spill: Optional[str] = None):
        super().__init__()
        self._previous = {n: p for n, p in previous.items() if n in names}
        self._names = list(names)
        self._buckets = max(1, buckets)
        self._spill = spill

    def expand(self, batches):
        p = batches.pipeline
        sides = [batches | "RowBuckets" >> beam.Map(_by_id, self._buckets).with_output_types(Bucketed)]
        for name, pattern in sorted(self._previous.items()):
            sides.append(p
                         | f"ReadPrevious[{name}]" >> beam.io.ReadFromParquetBatched(pattern, columns=[EXAMPLE_ID])
                         | f"PreviousIds[{name}]" >> beam.Map(previous_split_batch, self._names.index(name))
                         .with_output_types(pa.RecordBatch)
                         | f"PreviousBuckets[{name}]" >> beam.Map(_by_id, self._buckets).with_output_types(Bucketed))
        return (tuple(sides)
                | "GatherById" >> GroupBySpilled(self._spill)
                | "JoinPrevious" >> beam.FlatMap(_join_previous).with_output_types(pa.RecordBatch))


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

    With `previous` ({split name: file pattern of an earlier run's split}), the splits are
    sticky: a unit that was in one of them stays there (`AttachPreviousSplits`; a group
    takes its members' split), the new units fill each stratum's quota as closely as the
    kept ones allow (`fill_quota`), and the balance report has a `sticky` section with the
    kept and new units per split and the deviation from the targets.
    """

    def __init__(self, fractions: Dict[str, float], stratify_by: Sequence[str], seed: int,
                 group_by: Optional[str] = None, buckets: int = 16, require_rows: Optional[Dict[str, str]] = None,
                 spill: Optional[str] = None, previous: Optional[Dict[str, str]] = None):
        super().__init__()
        self._previous = dict(previous) if previous else None
        self._spill = spill     # groups are gathered, and rows wait for the thresholds, as files there
        self._require_rows = dict(require_rows or {})   # split → the error when the plan gives it no unit
        self._names = list(fractions)
        self._fractions = [fractions[n] for n in self._names]
        self._stratify_by = list(stratify_by)
        self._seed = seed
        self._group_by = group_by
        self._buckets = max(1, buckets)

    def expand(self, batches):
        if self._previous:
            batches = batches | "AttachPrevious" >> AttachPreviousSplits(self._previous, self._names, self._buckets,
                                                                          self._spill)
        if self._group_by:
            keyed = (batches
                     | "GroupBucket" >> beam.FlatMap(_by_group_bucket, self._group_by, self._buckets)
                     .with_output_types(KeyedBatch)
                     | "GatherGroups" >> GroupBySpilled(self._spill)
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
        if self._previous:
            kept = (sketch
                    | "KeptCounts" >> beam.Map(kept_counts)
                    | "SumKept" >> beam.CombineGlobally(MergeCounts()))
            plan = counts | "Allocate" >> beam.Map(plan_split, self._fractions, merge_below, pvalue.AsSingleton(kept))
        else:
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
