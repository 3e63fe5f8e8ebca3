"""What moved since the previous round: split churn and label changes, counted by the job.

Every example of this run's splits is compared with the same example in an earlier run's
splits (its raw split Parquet files, read for their `example_id` and label columns only, with
Beam's Parquet source): the split it was in and the label it had. Both sides travel as small
batches of (64-bit hash of the example id, split, label), shuffled by hash bucket (through
spill files with `spill`), so no worker holds more than a bucket and the launcher holds
nothing of the data. Two different ids sharing a 64-bit hash would be counted as one example
(about n²/2⁶⁵ pairs for n examples: 3·10⁻⁶ at ten million).

Output: one dict of counts, `{"compared", "added", "removed", "move\\t<from>\\t<to>": n,
"label\\t<from>\\t<to>": n}` (a missing label is the empty string), which
`pipeline/rounds.py` turns into the report's `rounds` section.
"""

from typing import Dict, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import EXAMPLE_ID, MergeCounts, hash_arrays, split_by_key
from transforms.spill import CoGroupBySpilled

_HASH, _SPLIT, _LABEL = "h", "s", "l"


def id_split_labels(batch, split: int, label: Optional[str], buckets: int):
    """(bucket, batch of (hash of example_id, split index, label as text)) for a batch of one
    split (a table, as Beam's Parquet source reads them, is taken a batch at a time)."""
    if isinstance(batch, pa.Table):
        for part in batch.to_batches():
            yield from id_split_labels(part, split, label, buckets)
        return
    if batch.num_rows == 0:
        return
    h = hash_arrays([batch.column(EXAMPLE_ID)], batch.num_rows, seed="churn")
    labels = (pc.cast(batch.column(label), pa.string()) if label and label in batch.schema.names
              else pa.nulls(batch.num_rows, pa.string()))
    small = pa.RecordBatch.from_arrays([pa.array(h), pa.array(np.full(batch.num_rows, split, np.int16)), labels],
                                       names=[_HASH, _SPLIT, _LABEL])
    yield from split_by_key(small, (h % np.uint64(buckets)).astype(np.int64))


def _side(batches) -> pa.Table:
    batches = list(batches)
    if not batches:
        return pa.table({_HASH: pa.array([], pa.uint64()), _SPLIT: pa.array([], pa.int16()),
                         _LABEL: pa.array([], pa.string())})
    return pa.Table.from_batches(batches)


def compare_bucket(element, before_names: Sequence[str], after_names: Sequence[str]) -> Dict[str, int]:
    """The counts of one bucket: examples in both runs, added, removed, and the (from, to)
    pairs of those whose split or label differ (matched by hash: sorted, intersected)."""
    _, sides = element
    before, after = _side(sides["before"]), _side(sides["after"])
    hb, ha = before.column(_HASH).to_numpy(), after.column(_HASH).to_numpy()
    _, ib, ia = np.intersect1d(hb, ha, return_indices=True)
    out = {"compared": len(ib), "added": len(ha) - len(ia), "removed": len(hb) - len(ib)}
    if not len(ib):
        return out
    sb, sa = before.column(_SPLIT).to_numpy()[ib], after.column(_SPLIT).to_numpy()[ia]
    pair = sb.astype(np.int64) * 65536 + sa.astype(np.int64)       # (split before, split after)
    for code, n in zip(*np.unique(pair[sb != sa], return_counts=True)):
        out[f"move\t{before_names[code // 65536]}\t{after_names[code % 65536]}"] = int(n)
    labels = pa.table({"a": pc.fill_null(before.column(_LABEL).take(pa.array(ib)), ""),
                       "b": pc.fill_null(after.column(_LABEL).take(pa.array(ia)), "")})
    changed = labels.filter(pc.not_equal(labels.column("a"), labels.column("b")))
    if changed.num_rows:
        for r in changed.group_by(["a", "b"]).aggregate([("a", "count")]).to_pylist():
            out[f"label\t{r['a']}\t{r['b']}"] = int(r["a_count"])
    return out


class ChurnSince(beam.PTransform):
    """{split: batches} of this run → one dict of counts against an earlier run's splits.

    `previous` maps each of the earlier run's split names to the file pattern of its raw
    Parquet files; `previous_label` is the label column there, `label` the one here."""

    def __init__(self, previous: Dict[str, str], previous_label: Optional[str], label: Optional[str],
                 buckets: int = 16, spill: Optional[str] = None):
        super().__init__()
        self._previous = dict(sorted(previous.items()))
        self._previous_label = previous_label
        self._label = label
        self._buckets = max(1, buckets)
        self._spill = spill

    def expand(self, splits):
        p = next(iter(splits.values())).pipeline
        before_names, after_names = list(self._previous), sorted(splits)
        before = []
        for i, (name, pattern) in enumerate(self._previous.items()):
            columns = [EXAMPLE_ID] + ([self._previous_label] if self._previous_label else [])
            before.append(p
                          | f"ReadBefore[{name}]" >> beam.io.ReadFromParquetBatched(pattern, columns=columns)
                          | f"KeysBefore[{name}]" >> beam.FlatMap(id_split_labels, i, self._previous_label,
                                                                  self._buckets))
        after = [splits[name] | f"KeysAfter[{name}]" >> beam.FlatMap(id_split_labels, i, self._label, self._buckets)
                 for i, name in enumerate(after_names)]
        # tuples, not flattened: each part is spilled in the stage that reads or makes it
        return ({"before": tuple(before), "after": tuple(after)}
                | "JoinRounds" >> CoGroupBySpilled(self._spill)
                | "CompareBuckets" >> beam.Map(compare_bucket, before_names, after_names)
                | "SumChurn" >> beam.CombineGlobally(MergeCounts()))
