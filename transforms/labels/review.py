"""The review queue: the examples whose consensus is weakest, for the next labelling round.

An example is a candidate when its labels tie, when its agreement with the consensus is
below `max_agreement`, or (Dawid-Skene) when the posterior of its consensus is below
`min_posterior`. Candidates are chosen per batch with Arrow and numpy (`review_rows`);
`WeakestPerSlice` keeps, per value of the slice column, the `per_slice` weakest (lowest
score, ties by example_id: deterministic), so the queue stays small whatever the data.
Being in the queue changes nothing else: a reviewed example stays in its split, a tied
one stays in quarantine.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import EXAMPLE_ID, naming
from transforms.labels.label_studio import label_studio_config, label_studio_tasks

REASON = "review_reason"
SCORE = "review_score"
SLICE = "review_slice"
NO_SLICE = "<all>"


@dataclass(frozen=True)
class ReviewSpec:
    """Which examples go to review and how many per slice."""

    max_agreement: float = 0.67              # agreement with the consensus below this: review
    min_posterior: Optional[float] = None    # Dawid-Skene: posterior of the consensus below this: review
    per_slice: int = 1000                    # at most this many per value of `slice_by`
    slice_by: Optional[str] = None           # a metadata column; None: the whole data set is one slice
    drop_columns: Sequence[str] = ()         # columns not carried into the queue (the label matrix)


def review_rows(batch: pa.RecordBatch, agreement: np.ndarray, tie: np.ndarray, posterior: Optional[np.ndarray],
                has_labels: np.ndarray, spec: ReviewSpec,
                unchosen: Optional[np.ndarray] = None) -> Optional[pa.RecordBatch]:
    """The candidates of one batch (every column of `batch`, plus review_reason,
    review_score and review_slice); None when there are none.

    `batch` carries the consensus label (null for a tie); `agreement`, `tie`, `posterior`
    and `has_labels` are per row, and so is `unchosen` (Dawid-Skene: a consensus that none
    of the item's annotators chose), always queued with reason `unchosen_consensus`. The
    score is the posterior (Dawid-Skene) or the agreement; a tie scores 0, first in the queue.
    """
    agreement = np.nan_to_num(np.asarray(agreement, dtype=np.float64), nan=0.0)
    score = agreement if posterior is None else np.asarray(posterior, dtype=np.float64)
    weak = has_labels & (agreement < spec.max_agreement) & ~tie
    low_post = np.zeros_like(weak)
    if posterior is not None and spec.min_posterior is not None:
        low_post = has_labels & (score < spec.min_posterior) & ~tie
    unchosen = np.zeros_like(weak) if unchosen is None else np.asarray(unchosen, bool) & ~tie
    pick = tie | weak | low_post | unchosen
    if not pick.any():
        return None
    reasons = np.where(tie, "tie", np.where(unchosen, "unchosen_consensus",
                                            np.where(weak, "low_agreement", "low_posterior")))
    score = np.where(tie, 0.0, score)
    idx = pa.array(np.flatnonzero(pick))
    out = batch.take(idx)
    keep = [n for n in out.schema.names if n not in spec.drop_columns]
    arrays = [out.column(n) for n in keep]
    names = list(keep)
    if spec.slice_by:
        s = pc.cast(out.column(spec.slice_by), pa.string())
        slices = pc.fill_null(s, "<null>")
    else:
        slices = pa.array([NO_SLICE] * out.num_rows, pa.string())
    arrays += [pa.array(reasons[pick].tolist(), pa.string()), pa.array(score[pick], pa.float64()), slices]
    names += [REASON, SCORE, SLICE]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def weakest_per_slice(table: pa.Table, per_slice: int) -> pa.Table:
    """The `per_slice` rows of lowest score (ties by example_id) of each slice, weakest first."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, [(SLICE, "ascending"), (SCORE, "ascending"), (EXAMPLE_ID, "ascending")])
    t = table.take(order)
    slices = t.column(SLICE).combine_chunks().to_numpy(zero_copy_only=False)
    starts = np.r_[0, np.flatnonzero(slices[1:] != slices[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(slices)])
    rank = np.arange(len(slices)) - np.repeat(starts, lengths)
    t = t.filter(pa.array(rank < per_slice))
    return t.take(pc.sort_indices(t, [(SCORE, "ascending"), (EXAMPLE_ID, "ascending")]))


class WeakestPerSlice(beam.CombineFn):
    """Candidate batches → one table: the weakest `per_slice` of each slice (bounded in
    memory: each accumulator is cut back to that after every input). Also counts every
    candidate, kept or not, per reason: `extract_output` gives (table or None, counts)."""

    def __init__(self, per_slice: int):
        self._n = per_slice

    def create_accumulator(self):
        return None, {}

    def _merge(self, tables: List[pa.Table]) -> Optional[pa.Table]:
        tables = [t for t in tables if t is not None]
        if not tables:
            return None
        return weakest_per_slice(pa.concat_tables(tables, promote=True), self._n)

    def add_input(self, acc, batch: pa.RecordBatch):
        table, counts = acc
        counts = dict(counts)
        for reason, n in zip(*np.unique(batch.column(REASON).to_numpy(zero_copy_only=False), return_counts=True)):
            counts[str(reason)] = counts.get(str(reason), 0) + int(n)
        return self._merge([table, pa.Table.from_batches([batch])]), counts

    def merge_accumulators(self, accs):
        accs = list(accs)
        counts: Dict[str, int] = {}
        for _, c in accs:
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
        return self._merge([t for t, _ in accs]), counts

    def extract_output(self, acc):
        return acc


# ---- the files of review/ ------------------------------------------------------------------

PARQUET = "part-00000-of-00001.parquet"
CSV = "review.csv"
LABEL_STUDIO = "label_studio_tasks.json"
LABEL_STUDIO_CONFIG = "label_studio_config.xml"


def _earlier_labels(table: pa.Table, annotators: Sequence[str], annotations_column: Optional[str]
                    ) -> List[Dict[str, str]]:
    """Each queued example's earlier labels, {annotator: label}: from the long form's JSON
    column, or the wide form's annotator columns."""
    import json

    if annotations_column and annotations_column in table.schema.names:
        return [{str(k): str(v) for k, v in json.loads(text).items()} if text else {}
                for text in table.column(annotations_column).to_pylist()]
    columns = {a: table.column(a).to_pylist() for a in annotators if a in table.schema.names}
    return [{a: v[i] for a, v in columns.items() if v[i] is not None} for i in range(table.num_rows)]


@dataclass(frozen=True)
class ReviewFiles:
    """Where review/ is and what its Label Studio tasks show."""

    directory: str
    label: str
    annotators: Sequence[str] = ()
    shown: Sequence[str] = ()                  # the item's columns shown in each task: data columns, metadata
    annotations_column: Optional[str] = None   # long form: the JSON {annotator: label} column
    classes: Sequence[str] = ()                # fixed class list; empty: the labels seen in the queue
    run_id: str = ""                           # the run whose queue this is: in every task's data


def write_review_files(result, files: ReviewFiles) -> Dict:
    """Writes review/ (Parquet, CSV, Label Studio tasks and config) from `WeakestPerSlice`'s
    output and returns the report's `review` section: {"candidates": {reason: n},
    "queued": n, "per_reason": {reason: n queued}}."""
    import csv
    import io
    import json

    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    table, candidates = result
    if table is None:
        table = pa.table({EXAMPLE_ID: pa.array([], pa.string()), REASON: pa.array([], pa.string()),
                          SCORE: pa.array([], pa.float64()), SLICE: pa.array([], pa.string())})
    join = lambda name: FileSystems.join(files.directory, name)  # noqa: E731
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    with naming(join(PARQUET)), FileSystems.create(join(PARQUET)) as f:
        f.write(buf.getvalue().to_pybytes())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.schema.names)
    for row in table.to_pylist():
        writer.writerow(["" if row[c] is None else row[c] for c in table.schema.names])
    with naming(join(CSV)), FileSystems.create(join(CSV)) as f:
        f.write(text.getvalue().encode("utf-8"))
    earlier = _earlier_labels(table, files.annotators, files.annotations_column)
    # the queue is bounded (per_slice x slices): its rows as Python objects are not a hot path
    tasks = label_studio_tasks(table.select([c for c in files.shown if c in table.schema.names]).to_pylist(),
                               earlier, files.shown, files.run_id, table.column(EXAMPLE_ID).to_pylist())
    with naming(join(LABEL_STUDIO)), FileSystems.create(join(LABEL_STUDIO)) as f:
        f.write(json.dumps(tasks, indent=1, default=str).encode("utf-8"))
    classes = list(files.classes) or sorted({v for given in earlier for v in given.values()})
    with naming(join(LABEL_STUDIO_CONFIG)), FileSystems.create(join(LABEL_STUDIO_CONFIG)) as f:
        f.write(label_studio_config(classes).encode("utf-8"))
    queued = table.column(REASON).to_pylist()
    return {"candidates": dict(sorted(candidates.items())), "queued": len(queued),
            "per_reason": {r: queued.count(r) for r in sorted(set(queued))},
            "files": [PARQUET, CSV, LABEL_STUDIO, LABEL_STUDIO_CONFIG]}


class WriteReviewQueue(beam.PTransform):
    """`LabelsResult.review` (one element) → the files of review/; output: one dict, the
    report's `review` section."""

    def __init__(self, files: ReviewFiles):
        super().__init__()
        self._files = files

    def expand(self, result):
        return result | "WriteReviewFiles" >> beam.Map(write_review_files, self._files)
