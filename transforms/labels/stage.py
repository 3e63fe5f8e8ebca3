"""The labels stage: the consensus label of every example, its agreement, and the report.

`ConsolidateLabels` takes clean batches carrying one label per annotator (wide form:
columns; long form: the list column `AttachAnnotations` adds) and replaces the label
with the consensus. Dataset-wide figures are small combines of `AgreementStats`.
"""

import json as _json
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue

from transforms.batches import (EXAMPLE_ID, ROW, SOURCE, as_batches, count_reasons, json_records, quarantine_batch,
                                with_field,
                                set_column)
from transforms.clean.near_dedup import GROUP as _NEAR_GROUP, NODE as _NEAR_NODE
from transforms.labels.agreement import AgreementStats
from transforms.labels.review import ReviewSpec, WeakestPerSlice, review_rows
from transforms.labels.consensus import (MISSING, Consensus, DSStats, agreement_certain, consensus_agreement, ds_estep,
                                         ds_init_stats, ds_mstep, ds_mstep_stats, encode_labels, majority, unanimous)

AGREEMENT = "label_agreement"
N_LABELS = "label_count"
POSTERIOR = "label_posterior"     # Dawid-Skene only: the posterior probability of the consensus


def labelled_schema(rows: pa.Schema, spec: "LabelsSpec") -> pa.Schema:
    """The columns of `ConsolidateLabels`' rows: the input's, with the consensus label (in its
    place, or appended), then label_agreement and label_count (and, with Dawid-Skene, label_posterior)."""
    fields = [pa.field(spec.label, pa.string()), pa.field(AGREEMENT, pa.float64()), pa.field(N_LABELS, pa.int64())]
    if spec.consensus == "dawid_skene":
        fields.append(pa.field(POSTERIOR, pa.float64()))
    for field in fields:
        rows = with_field(rows, field)
    return rows


@dataclass(frozen=True)
class LabelsSpec:
    """Where the labels are, how to reach a consensus, and what to report agreement by."""

    annotators: Tuple[str, ...]
    label: str                               # the column the consensus is written to
    consensus: str = "majority"              # majority | unanimous | dawid_skene
    on_tie: str = "quarantine"
    slices: Tuple[str, ...] = ()
    classes: Tuple[str, ...] = ()            # fixed class list; empty: found in the data
    iterations: int = 10                     # Dawid-Skene EM rounds (each one pass over the data)
    matrix_column: Optional[str] = None      # long form: one list column, a label per known annotator
    ordinal: bool = False                    # classes are ranks in `classes` order: weighted kappas too


def label_matrix(batch: pa.RecordBatch, spec: LabelsSpec, classes: Sequence[str]) -> np.ndarray:
    """The batch's (n, A) label matrix: from the annotator columns (wide form) or from
    the fixed-width list column of the long form."""
    if spec.matrix_column:
        lists = batch.column(spec.matrix_column)
        n = batch.num_rows
        flat = encode_labels([pc.list_flatten(lists)], list(classes))
        return flat.reshape(n, -1) if n else np.zeros((0, 0), np.int64)
    return encode_labels([batch.column(a) for a in spec.annotators], list(classes))


def _class_values(batch: pa.RecordBatch, spec: LabelsSpec) -> set:
    columns = ([pc.list_flatten(batch.column(spec.matrix_column))] if spec.matrix_column
               else [batch.column(a) for a in spec.annotators])
    values = set()
    for col in columns:
        values.update(v for v in pc.unique(col).to_pylist() if v is not None)
    return values


def _consensus_for(L: np.ndarray, K: int, spec: LabelsSpec, ds: Optional[Tuple[np.ndarray, np.ndarray]]) -> Consensus:
    return _consensus_and_posterior(L, K, spec, ds)[0]


def _consensus_and_posterior(L: np.ndarray, K: int, spec: LabelsSpec, ds: Optional[Tuple[np.ndarray, np.ndarray]]
                             ) -> Tuple[Consensus, Optional[np.ndarray]]:
    """The consensus of a label matrix, and (Dawid-Skene) each item's posterior of its
    most likely class (None for the other methods)."""
    if spec.consensus == "unanimous":
        return unanimous(L, K), None
    if spec.consensus == "dawid_skene":
        pi, prior = ds
        T = ds_estep(L, pi, prior)
        n_labels = (L >= 0).sum(axis=1).astype(np.int64)
        has = n_labels > 0
        top = T.max(axis=1, initial=0.0)
        tie = (np.isclose(T, top[:, None]).sum(axis=1) > 1) & has
        codes = np.where(has, T.argmax(axis=1), MISSING)
        if spec.on_tie == "quarantine":
            codes = np.where(tie, MISSING, codes)
        return Consensus(codes.astype(np.int64), consensus_agreement(L, codes), n_labels, tie, ~has), top
    return majority(L, K, spec.on_tie), None


def apply_consensus(batch: pa.RecordBatch, spec: LabelsSpec, classes: Sequence[str],
                    ds: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                    review: Optional[ReviewSpec] = None) -> Tuple[pa.RecordBatch, pa.RecordBatch]:
    """(rows with the consensus label, quarantine rows without one) of a batch; with
    `review`, a third item: the review candidates (`review_rows`), or None.

    The consensus goes into `spec.label`; `label_agreement` (share of the item's labels
    equal to it) and `label_count` ride along with the annotators' own columns, and with
    Dawid-Skene `label_posterior`, the posterior probability of the consensus (a
    `label_agreement` of 0 beside it marks a consensus no annotator of the item chose).
    """
    K = len(classes)
    L = label_matrix(batch, spec, classes)
    result, posterior = _consensus_and_posterior(L, K, spec, ds)
    names = pa.array(list(classes) + [None], pa.string())
    label = names.take(pa.array(np.where(result.codes >= 0, result.codes, K)))
    agreement = consensus_agreement(L, result.codes)
    out = batch
    columns = [(spec.label, label), (AGREEMENT, pa.array(agreement, pa.float64())),
               (N_LABELS, pa.array(result.n_labels, pa.int64()))]
    if posterior is not None:   # other methods keep their columns (and bytes)
        columns.append((POSTERIOR, pa.array(posterior, pa.float64())))
    for name, arr in columns:
        out = set_column(out, name, arr)
    keep = result.codes >= 0
    reasons = np.char.add("label_", result.reasons().astype(str))
    bad = np.flatnonzero(~keep)
    rows = pa.Table.from_batches([out.take(pa.array(bad))])
    data_cols = [c for c in rows.schema.names
                 if c not in (SOURCE, ROW, AGREEMENT, N_LABELS, POSTERIOR, EXAMPLE_ID, spec.matrix_column,
                              *NEAR_DEDUP_COLUMNS)]
    quarantine = quarantine_batch(json_records(rows, data_cols), pa.array(reasons[bad].tolist(), pa.string()),
                                  "labels", rows.column(SOURCE), rows.column(ROW), rows.column(EXAMPLE_ID))
    if review is None:
        return out.filter(pa.array(keep)), quarantine
    unchosen = keep & ~result.no_labels & (agreement == 0)   # a consensus none of the item's annotators chose
    candidates = review_rows(out, result.agreement, result.tie, posterior, ~result.no_labels, review, unchosen)
    return out.filter(pa.array(keep)), quarantine, candidates


NEAR_DEDUP_COLUMNS = (_NEAR_NODE, _NEAR_GROUP)   # the near-dedup stage's bookkeeping, not the record


class _ConsensusFn(beam.DoFn):
    QUARANTINE = "quarantine"
    REVIEW = "review"

    def __init__(self, spec: LabelsSpec, review: Optional[ReviewSpec] = None):
        self._spec = spec
        self._review = review

    def process(self, batch, classes, ds=None):
        rows, quarantine, *rest = apply_consensus(batch, self._spec, classes, ds, self._review)
        if rows.num_rows:
            yield rows
        if quarantine.num_rows:
            count_reasons(quarantine)
            yield pvalue.TaggedOutput(self.QUARANTINE, quarantine)
        if rest and rest[0] is not None:
            yield pvalue.TaggedOutput(self.REVIEW, rest[0])


def _agreement_stats(batch: pa.RecordBatch, spec: LabelsSpec, classes: Sequence[str], names: Sequence[str],
                     ds=None) -> Dict[str, AgreementStats]:
    """{"": overall, "<slice column>=<value>": ...} agreement counts of one batch."""
    K, A = len(classes), len(names)
    L = label_matrix(batch, spec, classes)
    result = _consensus_for(L, K, spec, ds)
    codes = result.codes
    certain = agreement_certain(spec.consensus, spec.on_tie, result.n_labels, codes)
    out = {"": AgreementStats(K, A, list(names), list(classes)).add(L, codes, certain)}
    for col in spec.slices:
        values = pc.fill_null(pc.cast(batch.column(col), pa.string()), "<null>")
        enc = pc.dictionary_encode(values)
        idx = enc.indices.to_numpy(zero_copy_only=False)
        for j, value in enumerate(enc.dictionary.to_pylist()):
            sel = idx == j
            out[_json.dumps([col, value])] = AgreementStats(K, A, list(names), list(classes)).add(
                L[sel], codes[sel], certain[sel])
    return out


class _MergeAgreement(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, stats):
        return self.merge_accumulators([acc, stats])

    def merge_accumulators(self, accs):
        out: Dict[str, AgreementStats] = {}
        for acc in accs:
            for key, st in acc.items():
                if key in out:
                    out[key].merge(st)
                else:
                    out[key] = AgreementStats(st.K, st.n_annotators, st.annotators, st.classes).merge(st)
        return out

    def extract_output(self, acc):
        return acc


class _SumDawidSkeneStats(beam.CombineFn):
    """Sums `DSStats` (one M-step's statistics) over all batches."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, stats):
        return stats if acc is None else DSStats.merge(acc, stats)

    def merge_accumulators(self, accs):
        present = [a for a in accs if a is not None]
        if not present:
            return None
        out = present[0]
        for a in present[1:]:
            out = out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


def agreement_report(stats: Dict[str, AgreementStats], spec: LabelsSpec,
                     ds: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict:
    """The `labels` section of report.json: overall figures, then slices, classes and
    annotators ranked by agreement, lowest first, each with the items behind it; with
    Dawid-Skene's final (pi, prior), `dawid_skene` (`dawid_skene_report`)."""
    overall = stats[""].to_dict(spec.ordinal) if "" in stats else {}
    slices: Dict[str, List[Dict]] = {}
    for key, st in stats.items():
        if not key:
            continue
        col, value = _json.loads(key)
        row = {"value": value, "items": st.n_items, "pairable_items": st.n_pairable_items,
               "hlp": st.hlp(), "fleiss_kappa": st.fleiss_kappa(), "krippendorff_alpha": st.krippendorff_alpha(),
               "unanimous_share": st.unanimous_share()}
        if spec.ordinal:
            row.update(weighted_kappa=st.weighted_kappa("quadratic"),
                       krippendorff_alpha_ordinal=st.krippendorff_alpha("ordinal"))
        slices.setdefault(col, []).append(row)
    for rows in slices.values():
        rows.sort(key=lambda r: (r["hlp"] is None, r["hlp"] if r["hlp"] is not None else 0, str(r["value"])))
    classes = sorted(overall.get("classes_detail", []),
                     key=lambda r: (r["mean_item_agreement"] is None, r["mean_item_agreement"] or 0))
    annotators = sorted(overall.get("annotators_detail", []),
                        key=lambda r: (r["agreement_with_consensus"] is None, r["agreement_with_consensus"] or 0))
    report = {"consensus": spec.consensus, "on_tie": spec.on_tie, "overall": overall,
              "slices_by_agreement": slices, "classes_by_agreement": classes, "annotators_by_agreement": annotators}
    if ds is not None and "" in stats:
        report["dawid_skene"] = dawid_skene_report(ds, stats[""], spec)
    return report


def dawid_skene_report(ds: Tuple[np.ndarray, np.ndarray], overall: AgreementStats, spec: LabelsSpec) -> Dict:
    """Each annotator's estimated confusion matrix, matrix[true][given] = P(given | true)
    (rows sum to 1), and the class prior, from the last M-step."""
    pi, prior = ds
    classes = list(overall.classes or range(overall.K))
    names = list(overall.annotators or range(overall.n_annotators))
    return {"iterations": spec.iterations, "classes": classes,
            "unchosen_items": int(overall.unchosen_by_class.sum()),
            "prior": {str(c): float(p) for c, p in zip(classes, prior)},
            "confusion": {str(a): {"classes": classes, "matrix": pi[i].tolist(),
                                   "labels": int(overall.labels_by_annotator[i])}
                          for i, a in enumerate(names)}}


class LabelsResult(NamedTuple):
    """`ConsolidateLabels`' outputs."""

    rows: beam.PCollection         # record batches: the label set, plus label_agreement and label_count
    quarantine: beam.PCollection   # record batches, QUARANTINE_SCHEMA: label_tie, label_disagreement,
    #                                label_no_labels (stage "labels")
    report: beam.PCollection       # one dict: `agreement_report`, the `labels` section of report.json
    review: Optional[beam.PCollection] = None   # with a ReviewSpec: one (table or None, {reason: candidates})


@beam.typehints.with_input_types(pa.RecordBatch)
class ConsolidateLabels(beam.PTransform):
    """Clean batches with a label per annotator → a `LabelsResult`, whose rows carry the
    consensus as their label.

    The class list comes from `spec.classes` or from the data (a pre-pass); Dawid-Skene
    runs `spec.iterations` EM rounds, each an E-step per batch and a small combine of
    M-step statistics.
    """

    def __init__(self, spec: LabelsSpec, annotator_names=None, review: Optional[ReviewSpec] = None):
        """`annotator_names`: for the long form, a one-element PCollection with the list of
        annotators, in the order of the matrix column. `review`: also choose the review
        queue (`LabelsResult.review`)."""
        super().__init__()
        self._spec = spec
        self._names = annotator_names
        self._review = review

    def expand(self, batches):
        spec = self._spec
        if self._names is None:
            names = batches.pipeline | "AnnotatorNames" >> beam.Create([list(spec.annotators)])
        else:
            names = self._names
        if spec.classes:
            classes = batches.pipeline | "Classes" >> beam.Create([list(spec.classes)])
        else:
            classes = (batches
                       | "LabelValues" >> beam.Map(_class_values, spec)
                       | "UnionValues" >> beam.CombineGlobally(lambda sets: set().union(*sets))
                       | "SortClasses" >> beam.Map(sorted))
        classes_si = pvalue.AsSingleton(classes)
        ds_si = None
        if spec.consensus == "dawid_skene":
            def encode(b, cls):
                return label_matrix(b, spec, cls)

            stats = (batches
                     | "DSInit" >> beam.Map(lambda b, cls: ds_init_stats(encode(b, cls), len(cls)), classes_si)
                     | "DSInitSum" >> beam.CombineGlobally(_SumDawidSkeneStats()))
            params = stats | "DSMStep0" >> beam.Map(ds_mstep)
            for i in range(1, spec.iterations + 1):
                def step(b, cls, prm):
                    L = encode(b, cls)
                    return ds_mstep_stats(L, ds_estep(L, *prm), len(cls))

                stats = (batches
                         | f"DSStats[{i}]" >> beam.Map(step, classes_si, pvalue.AsSingleton(params))
                         | f"DSSum[{i}]" >> beam.CombineGlobally(_SumDawidSkeneStats()))
                params = stats | f"DSMStep[{i}]" >> beam.Map(ds_mstep)
            ds_si = pvalue.AsSingleton(params)
        extra = [ds_si] if ds_si is not None else []
        tags = [_ConsensusFn.QUARANTINE] + ([_ConsensusFn.REVIEW] if self._review else [])
        parts = as_batches(batches | "Consensus" >> beam.ParDo(_ConsensusFn(spec, self._review), classes_si,
                                                               *extra).with_outputs(*tags, main="rows"),
                           "rows", *tags)
        report = (batches
                  | "AgreementStats" >> beam.Map(_agreement_stats, spec, classes_si, pvalue.AsSingleton(names),
                                                 *extra)
                  | "MergeAgreement" >> beam.CombineGlobally(_MergeAgreement())
                  | "AgreementReport" >> beam.Map(agreement_report, spec, *extra))
        review = None
        if self._review:
            review = (parts[_ConsensusFn.REVIEW]
                      | "WeakestPerSlice" >> beam.CombineGlobally(WeakestPerSlice(self._review.per_slice)))
        return LabelsResult(parts.rows, parts[_ConsensusFn.QUARANTINE], report, review)
