"""Clean, after exact dedup: near-duplicates by MinHash LSH (`NearDeduplicate`).

How it works (every step on record batches, numpy-vectorised, never one element per row):

1. Shingles (`shingle_table`): the configured text columns, normalised as `dedup.normalize`
   does (trim, case-fold, collapse whitespace) and joined by a space, cut into word n-grams
   (`words:N`, words joined by one space) or character n-grams (`chars:N`); a text shorter
   than N is one shingle; an empty text has none and is never a near-duplicate.
2. Signatures (`minhash_signatures`): datasketch's MinHash scheme exactly (its default
   `sha1_hash32` token hash, permutations `(a·h + b) mod (2⁶¹−1) & (2³²−1)` with (a, b) drawn
   by `numpy.random.RandomState(seed)`), so a signature equals `datasketch.MinHash(num_perm,
   seed).update_batch(shingles)`. Each distinct shingle of a batch is hashed once.
3. LSH (`optimal_param`, `band_keys`): `bands × rows` chosen as datasketch's `_optimal_param`
   (text-dedup's `optimal_param`) does, minimising the integrated false-positive + false-negative
   probability at the threshold. One 64-bit key per (row, band).
4. Candidates (`band_pairs`): band keys shuffled as sub-batches keyed by hash bucket
   (`key_by_bucket`); every pair of rows sharing a band key is a candidate. A band key with
   more than `bucket_cap` rows (boilerplate) is not expanded into all its pairs: its
   `bucket_cap` lowest rows are anchors and every other row is paired with the anchors only,
   so its work is `cap × size` and not `size²`; such keys are counted and reported
   (`oversized_buckets`, `largest_bucket`).
5. Verification: each candidate pair's estimated Jaccard (the share of equal signature
   values, what `datasketch.MinHash.jaccard` computes) must be ≥ threshold. The pairs meet
   their two signatures in two shuffles keyed by node bucket; only the signatures of rows
   that have a candidate pair travel (a side input of those nodes filters them).
6. Clusters (`UnionFind`, `union_find_roots`): connected components of the verified pairs
   as one combine (a union-find forest per worker, merged). There is one round whatever the
   graph's diameter, so it needs no iteration the runner would have to support; the bound is
   memory: the final merge holds 16 bytes per row that has a verified pair (1M such rows:
   16 MB). Past `max_nodes` such rows the stage fails with a message naming the setting,
   rather than running a worker out of memory. A component's label is its lowest row.

Rows are numbered (`node`) by (rank of `_source` among all sources, `_row`), so the lowest
node of a cluster is its lowest (`_source`, `_row`), on any runner and sharding.
"""

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms.batches import (DUPLICATES_SCHEMA, EXAMPLE_ID, METRICS_NAMESPACE, ROW, SOURCE, KeyedBatch,
                                concat_batches, drop_columns, hash_arrays, key_by_bucket, set_column, without_fields)
from transforms.clean.minhash import (band_keys, band_pairs, estimated_jaccard, minhash_signatures, normalized_text,
                                      shingle_table, union_find_roots)
from transforms.spill import CoGroupBySpilled, GroupBySpilled

NODE = "_nd_node"          # int64: (source rank << 40) | _row — the row's place in (_source, _row) order
GROUP = "_near_dup_group"  # with action "group": the cluster (and split.group_by group) the split keeps together
ROW_BITS = 40
NEAR_DUPLICATE = "near_duplicate"


@dataclass(frozen=True)
class NearDedupSpec:
    """Which text is compared and how; what a cluster does (drop | group | none)."""

    columns: Tuple[str, ...]
    threshold: float = 0.8
    shingle: str = "words"          # or "chars"
    shingle_size: int = 3
    num_perm: int = 128
    bands: int = 9
    rows: int = 13
    action: str = "drop"            # drop | group | none
    seed: int = 1                   # datasketch's default MinHash seed
    bucket_cap: int = 200           # band keys with more rows are paired with anchors only
    max_nodes: int = 50_000_000     # rows with a verified pair the union-find may hold
    group_by: Optional[str] = None  # split.group_by, merged into the groups with action "group"


def node_ids(batch: pa.RecordBatch, source_rank: Dict[str, int]) -> np.ndarray:
    """Each row's node: (rank of its `_source`) << 40 | `_row`, so node order is (_source, _row) order."""
    src = batch.column(SOURCE)
    ranks = np.array([source_rank[s] for s in pc.unique(src).to_pylist()], np.int64)
    codes = pc.index_in(src, value_set=pc.unique(src)).to_numpy(zero_copy_only=False)
    return (ranks[codes] << ROW_BITS) | batch.column(ROW).to_numpy(zero_copy_only=False).astype(np.int64)


def group_node_ids(values: pa.Array) -> np.ndarray:
    """Negative ids for `split.group_by` values (row nodes are ≥ 0): a row joined to its
    group value's node puts its group and its near-duplicates in one component."""
    text = pc.fill_null(pc.cast(values, pa.string()), "<null>")
    return -(hash_arrays([text], len(text), seed="group").view(np.int64) & np.int64((1 << 62) - 1)) - 1


# ---- Beam --------------------------------------------------------------------------------


def _sig_array(sig: np.ndarray) -> pa.Array:
    n, p = sig.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * p), n, [None, pa.py_buffer(np.ascontiguousarray(sig)
                                                                                          .tobytes())])


def _sig_numpy(arr: pa.Array, num_perm: int) -> np.ndarray:
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if len(arr) == 0:
        return np.zeros((0, num_perm), np.uint32)
    buf = arr.buffers()[1]
    return np.frombuffer(buf, np.uint32)[arr.offset * num_perm:(arr.offset + len(arr)) * num_perm].reshape(
        len(arr), num_perm)


class _SignFn(beam.DoFn):
    """Rows → rows with their node (main), their signatures (`signatures`: node, sig) and
    their band keys (`bands`: key, node); a row without shingles has neither."""

    BANDS = "bands"
    SIGNATURES = "signatures"

    def __init__(self, spec: NearDedupSpec):
        self._spec = spec
        self._rows = Metrics.counter(METRICS_NAMESPACE, "clean.near_dedup.signed")

    def process(self, batch: pa.RecordBatch, source_rank: Dict[str, int]):
        s = self._spec
        nodes = node_ids(batch, source_rank)
        texts = normalized_text(batch, s.columns)
        shingles, row_of = shingle_table(texts, s.shingle, s.shingle_size)
        sig, has = minhash_signatures(shingles, row_of, batch.num_rows, s.num_perm, s.seed)
        self._rows.inc(batch.num_rows)
        yield set_column(batch, NODE, pa.array(nodes, pa.int64()))
        live = np.flatnonzero(has)
        if len(live):
            yield pvalue.TaggedOutput(self.SIGNATURES, pa.RecordBatch.from_arrays(
                [pa.array(nodes[live], pa.int64()), _sig_array(sig[live])], names=["node", "sig"]))
            keys = band_keys(sig[live], s.bands, s.rows).ravel()
            yield pvalue.TaggedOutput(self.BANDS, pa.RecordBatch.from_arrays(
                [pa.array(keys.view(np.int64)), pa.array(np.repeat(nodes[live], s.bands), pa.int64())],
                names=["key", "node"]))


def _sources(batch: pa.RecordBatch) -> List[str]:
    return pc.unique(batch.column(SOURCE)).to_pylist()


class _Distinct(beam.CombineFn):
    def create_accumulator(self):
        return set()

    def add_input(self, acc, values):
        acc.update(values)
        return acc

    def merge_accumulators(self, accs):
        out = set()
        for a in accs:
            out |= a
        return out

    def extract_output(self, acc):
        return {s: i for i, s in enumerate(sorted(acc))}


def _pairs_of_bucket(element, cap: int):
    _, batches = element
    t = concat_batches(list(batches))
    if t.num_rows == 0:
        return
    a, b, stats = band_pairs(t.column("key").to_numpy(), t.column("node").to_numpy(), cap)
    yield pvalue.TaggedOutput("stats", stats)
    if len(a):
        yield pa.RecordBatch.from_arrays([pa.array(a, pa.int64()), pa.array(b, pa.int64())], names=["a", "b"])


class _MergeTotals(beam.CombineFn):
    """Dicts with fixed keys merged into one: each key summed, those in `maxed` by max."""

    def __init__(self, keys, maxed=()):
        super().__init__()
        self._keys, self._maxed = tuple(keys), frozenset(maxed)

    def create_accumulator(self):
        return dict.fromkeys(self._keys, 0)

    def add_input(self, acc, d):
        return {k: (max(acc[k], d[k]) if k in self._maxed else acc[k] + d[k]) for k in acc}

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out = self.add_input(out, a)
        return out

    def extract_output(self, acc):
        return acc


def _keyed(batch: pa.RecordBatch, column: str, buckets: int):
    return key_by_bucket(batch, [batch.column(column)], buckets)


def _pair_nodes(batch: pa.RecordBatch) -> np.ndarray:
    return np.unique(np.concatenate([batch.column("a").to_numpy(), batch.column("b").to_numpy()]))


class _UniqueNodes(beam.CombineFn):
    """Node arrays → their sorted union (the rows that have a candidate pair)."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, nodes):
        acc.append(nodes)
        if len(acc) > 64:
            acc[:] = [np.unique(np.concatenate(acc))]
        return acc

    def merge_accumulators(self, accs):
        return [np.unique(np.concatenate([a for acc in accs for a in acc] or [np.zeros(0, np.int64)]))]

    def extract_output(self, acc):
        return np.unique(np.concatenate(acc)) if acc else np.zeros(0, np.int64)


def _candidate_sigs(batch: pa.RecordBatch, candidates: np.ndarray) -> pa.RecordBatch:
    """Only the signatures a candidate pair needs travel to the verification joins."""
    return batch.filter(pa.array(np.isin(batch.column("node").to_numpy(), candidates)))


def _lookup(table: pa.Table, nodes: np.ndarray, num_perm: int) -> Tuple[np.ndarray, np.ndarray]:
    """Signatures of `nodes` from a (node, sig) table: (found mask, signatures)."""
    have = table.column("node").to_numpy()
    order = np.argsort(have)
    pos = np.searchsorted(have[order], nodes)
    pos = np.minimum(pos, max(len(have) - 1, 0))
    found = (have[order][pos] == nodes) if len(have) else np.zeros(len(nodes), bool)
    sigs = _sig_numpy(table.column("sig"), num_perm)
    return found, sigs[order[pos]] if len(have) else np.zeros((len(nodes), num_perm), np.uint32)


def _join_a(element, num_perm: int, buckets: int):
    """Pairs keyed by a's bucket meet a's signature: → per b bucket, the pairs (a, b) and,
    once per distinct a among them, a's signature (a_node, a_sig): a row with many pairs
    sends its signature once per bucket, not once per pair."""
    _, grouped = element
    pairs = concat_batches(grouped["pairs"])
    if pairs.num_rows == 0:
        return
    sigs = concat_batches(grouped["sigs"])
    uniq = np.unique(np.stack([pairs.column("a").to_numpy(), pairs.column("b").to_numpy()], axis=1), axis=0)
    out = pa.RecordBatch.from_arrays([pa.array(uniq[:, 0]), pa.array(uniq[:, 1])], names=["a", "b"])
    for bucket, part in key_by_bucket(out, [out.column("b")], buckets):
        a_nodes = np.unique(part.column("a").to_numpy())
        _, sig_a = _lookup(sigs, a_nodes, num_perm)
        yield bucket, part
        yield bucket, pa.RecordBatch.from_arrays([pa.array(a_nodes), _sig_array(sig_a)], names=["node", "sig"])


def _join_b(element, num_perm: int, threshold: float):
    """Pairs (a, b) with a's signatures meet b's signature: → the verified pairs (a, b, similarity)."""
    _, grouped = element
    parts = list(grouped["pairs"])
    pairs = concat_batches([x for x in parts if "a" in x.schema.names])
    if pairs.num_rows == 0:
        return
    a_sigs = concat_batches([x for x in parts if "a" not in x.schema.names])
    sigs = concat_batches(grouped["sigs"])
    a, b = pairs.column("a").to_numpy(), pairs.column("b").to_numpy()
    _, sig_a = _lookup(a_sigs, a, num_perm)
    _, sig_b = _lookup(sigs, b, num_perm)
    sim = estimated_jaccard(sig_a, sig_b)
    keep = sim >= threshold
    yield pvalue.TaggedOutput("checked", {"candidates": int(len(b)), "verified": int(keep.sum())})
    if keep.any():
        yield pa.RecordBatch.from_arrays([pa.array(a[keep]), pa.array(b[keep]), pa.array(sim[keep])],
                                         names=["a", "b", "similarity"])


class UnionFind(beam.CombineFn):
    """Edge batches (a, b[, similarity]) → {"nodes", "roots", "similarity"}: each node with an
    edge (sorted), its component's lowest node, and the highest similarity of its edges.

    The accumulator buffers edges and, past a size, compacts them into their forest (one
    edge node → root per node), so partial combines on each worker shrink the data before
    the one final merge, and memory is bounded by the nodes, not the edges. Fails past
    `max_nodes` nodes.
    """

    COMPACT_EDGES = 1 << 20

    def __init__(self, max_nodes: int):
        self._max = max_nodes

    def create_accumulator(self):
        return {"a": [], "b": [], "sn": [], "sv": [], "pending": 0, "compacted": 0}

    def _compact(self, acc):
        if not acc["a"]:
            return acc
        a, b = np.concatenate(acc["a"]), np.concatenate(acc["b"])
        nodes, roots = union_find_roots(a, b)
        if len(nodes) > self._max:
            raise ValueError(f"clean.near_dedup: {len(nodes)} rows have near-duplicates, more than max_nodes "
                             f"({self._max}) the cluster step holds on one worker; raise max_nodes or the threshold")
        sn, sv = np.concatenate(acc["sn"]), np.concatenate(acc["sv"])
        order = np.argsort(sn, kind="stable")
        sn, sv = sn[order], sv[order]
        u, first = np.unique(sn, return_index=True)
        best = np.maximum.reduceat(sv, first) if len(sv) else sv
        return {"a": [nodes], "b": [roots], "sn": [u], "sv": [best], "pending": 0, "compacted": len(nodes)}

    def _maybe_compact(self, acc):
        if acc["pending"] > max(self.COMPACT_EDGES, 2 * acc["compacted"]):
            return self._compact(acc)
        return acc

    def add_input(self, acc, batch):
        a, b = batch.column("a").to_numpy(), batch.column("b").to_numpy()
        s = (batch.column("similarity").to_numpy() if "similarity" in batch.schema.names
             else np.zeros(batch.num_rows))
        acc["a"].append(a)
        acc["b"].append(b)
        acc["sn"] += [a, b]
        acc["sv"] += [s, s]
        acc["pending"] += len(a)
        return self._maybe_compact(acc)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            for k in ("a", "b", "sn", "sv"):
                out[k] += acc[k]
            out["pending"] += acc["pending"] + acc["compacted"]
        return self._maybe_compact(out)

    def compact(self, acc):
        return self._compact(acc)

    def extract_output(self, acc):
        acc = self._compact(acc)
        if not acc["a"]:
            e = np.zeros(0, np.int64)
            return {"nodes": e, "roots": e, "similarity": np.zeros(0)}
        nodes, roots = acc["a"][0], acc["b"][0]
        sim = np.zeros(len(nodes))
        pos = np.searchsorted(nodes, acc["sn"][0])
        sim[pos] = acc["sv"][0]
        return {"nodes": nodes, "roots": roots, "similarity": sim}


CLUSTER_BYTES_PER_NODE = 24     # the clusters side input: int64 node, int64 root, float64 similarity


def clusters_bytes(clusters: Dict) -> int:
    """What the clusters side input weighs on each worker that holds it."""
    return sum(clusters[k].nbytes for k in ("nodes", "roots", "similarity"))


def _roots_of(nodes: np.ndarray, clusters: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """(root, similarity) per node: its cluster's lowest node, itself when it has no pair."""
    known = clusters["nodes"]
    if len(known) == 0:
        return nodes.copy(), np.zeros(len(nodes))
    pos = np.minimum(np.searchsorted(known, nodes), len(known) - 1)
    hit = known[pos] == nodes
    return np.where(hit, clusters["roots"][pos], nodes), np.where(hit, clusters["similarity"][pos], 0.0)


def _root_ids(batch: pa.RecordBatch, clusters: Dict) -> pa.RecordBatch:
    """The example_id of each cluster's kept row (the root), from the rows that are roots."""
    nodes = batch.column(NODE).to_numpy()
    roots, _ = _roots_of(nodes, clusters)
    is_root = np.isin(nodes, clusters["roots"]) & (roots == nodes)
    idx = pa.array(np.flatnonzero(is_root))
    return pa.RecordBatch.from_arrays([batch.column(NODE).take(idx), batch.column(EXAMPLE_ID).take(idx)],
                                      names=["node", "id"])


class _SortedTable(beam.CombineFn):
    """(node, id) batches → one table sorted by node: a lookup side input, read by `_lookup_ids`."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, batch):
        if batch.num_rows:
            acc.append(batch)
        return acc

    def merge_accumulators(self, accs):
        return [b for acc in accs for b in acc]

    def extract_output(self, acc):
        if not acc:
            return pa.table({"node": pa.array([], pa.int64()), "id": pa.array([], pa.string())})
        t = pa.Table.from_batches(acc).combine_chunks()
        return t.take(pc.sort_indices(t, sort_keys=[("node", "ascending")]))


def _lookup_ids(table: pa.Table, nodes: np.ndarray):
    """(found mask, positions) of `nodes` in a `_SortedTable` table."""
    known = table.column("node").to_numpy()
    if not len(known):
        return np.zeros(len(nodes), bool), np.zeros(len(nodes), np.int64)
    pos = np.minimum(np.searchsorted(known, nodes), len(known) - 1)
    return known[pos] == nodes, pos


NEAR_DUPLICATES_COLUMNS = (("reason", pa.string()), ("similarity", pa.float64()))
# duplicates/ with near_dedup on: DUPLICATES_SCHEMA, then reason and similarity (`as_near_duplicates`)
NEAR_DUPLICATES_SCHEMA = pa.schema(list(DUPLICATES_SCHEMA) + [pa.field(n, t) for n, t in NEAR_DUPLICATES_COLUMNS])


class _ApplyFn(beam.DoFn):
    """Rows with their cluster → kept rows (main) and, with drop, `duplicates`."""

    DUPLICATES = "duplicates"

    def __init__(self, spec: NearDedupSpec, duplicates_schema: pa.Schema):
        self._spec = spec
        self._schema = NEAR_DUPLICATES_SCHEMA
        self._dropped = Metrics.counter(METRICS_NAMESPACE, "clean.near_duplicates")

    def process(self, batch: pa.RecordBatch, clusters: Dict, root_ids: Dict):
        nodes = batch.column(NODE).to_numpy()
        roots, sim = _roots_of(nodes, clusters)
        rows = batch
        if self._spec.action == "drop":
            dup = roots != nodes
            if dup.any():
                idx = pa.array(np.flatnonzero(dup))
                self._dropped.inc(int(dup.sum()))
                d = rows.take(idx)
                _, pos = _lookup_ids(root_ids, roots[dup])
                kept_ids = root_ids.column("id").take(pa.array(pos)).combine_chunks()
                cols = {EXAMPLE_ID: d.column(EXAMPLE_ID), "kept_example_id": kept_ids, SOURCE: d.column(SOURCE),
                        ROW: d.column(ROW), "label_conflict": pa.array(np.zeros(len(d), bool)),
                        "reason": pa.array([NEAR_DUPLICATE] * len(d), pa.string()),
                        "similarity": pa.array(sim[dup])}
                yield pvalue.TaggedOutput(self.DUPLICATES, pa.RecordBatch.from_arrays(
                    [cols[f.name] for f in self._schema], schema=self._schema))
                rows = rows.filter(pa.array(~dup))
        elif self._spec.action == "group":
            rows = set_column(rows, GROUP, pc.cast(pa.array(_roots_of(rows.column(NODE).to_numpy(), clusters)[0]),
                                                   pa.string()))
        if rows.num_rows:
            yield rows


def _group_edges(batch: pa.RecordBatch, group_by: str) -> pa.RecordBatch:
    """With action group and split.group_by: each row joined to its group value's node."""
    g = group_node_ids(batch.column(group_by))
    return pa.RecordBatch.from_arrays([batch.column(NODE), pa.array(g, pa.int64())], names=["a", "b"])


class NearDedupResult(NamedTuple):
    """`NearDeduplicate`'s outputs."""

    rows: beam.PCollection          # kept rows (with `_nd_node`; with group, `_near_dup_group`), then `finish`
    duplicates: beam.PCollection    # duplicates schema + reason, similarity: each dropped near-copy
    pairs: beam.PCollection         # verified pairs (a, b, similarity) by node, for the leakage report
    clusters: beam.PCollection      # one dict: the union-find result (nodes, roots, similarity)
    stats: beam.PCollection         # one dict: the stage's counts for the report


def _stats(buckets: Dict, checks: Dict, clusters: Dict, spec: NearDedupSpec) -> Dict:
    nodes, roots = clusters["nodes"], clusters["roots"]
    row_nodes = np.ones(len(nodes), bool)
    cluster_count = int(len(np.unique(roots)))
    return {"threshold": spec.threshold, "num_perm": spec.num_perm, "bands": spec.bands, "rows": spec.rows,
            "shingles": f"{spec.shingle}:{spec.shingle_size}", "action": spec.action, "seed": spec.seed,
            "bucket_cap": spec.bucket_cap, "candidate_pairs": checks.get("candidates", 0),
            "verified_pairs": checks.get("verified", 0), "clusters": cluster_count,
            "rows_in_clusters": int(row_nodes.sum()),
            "near_duplicates": int((row_nodes & (nodes != roots)).sum()) if spec.action == "drop" else 0,
            "band_buckets": buckets["buckets"], "largest_bucket": buckets["largest_bucket"],
            "oversized_buckets": buckets["oversized_buckets"], "oversized_bucket_rows": buckets["oversized_rows"]}


@beam.typehints.with_input_types(pa.RecordBatch)
class NearDeduplicate(beam.PTransform):
    """Clean batches → a `NearDedupResult`.

    `rows` keep their columns plus `_nd_node` (the leakage report reads it; remove it with
    `finish_rows` before writing) and, with action group, `_near_dup_group` (the split's
    group column). With drop, every non-first row of a cluster leaves through `duplicates`.

    Memory bound: the clusters (`UnionFind`'s result: node, root and similarity of every row
    that has a near-duplicate) are a side input of the steps that apply them, so every worker
    running them holds a copy: `CLUSTER_BYTES_PER_NODE` (24) bytes per such row, at most
    `max_nodes` rows (1.2 GB at the default 50M); past it the job fails naming the setting.
    Rows without a near-duplicate cost nothing there, whatever the size of the data.
    """

    def __init__(self, spec: NearDedupSpec, buckets: int = 16, spill: Optional[str] = None):
        super().__init__()
        self._spec = spec
        self._schema = NEAR_DUPLICATES_SCHEMA
        self._buckets = max(1, buckets)
        self._spill = spill     # band keys and signatures are grouped and joined as files there

    def expand(self, batches):
        s, nb = self._spec, self._buckets
        ranks = (batches | "Sources" >> beam.Map(_sources)
                 | "SourceRanks" >> beam.CombineGlobally(_Distinct()))
        signed = batches | "Sign" >> beam.ParDo(_SignFn(s), pvalue.AsSingleton(ranks)).with_outputs(
            _SignFn.BANDS, _SignFn.SIGNATURES, main="rows")
        rows, bands, all_sigs = signed.rows, signed[_SignFn.BANDS], signed[_SignFn.SIGNATURES]
        for pc_ in (rows, bands, all_sigs):
            pc_.element_type = pa.RecordBatch
        cand = (bands
                | "BandBucket" >> beam.FlatMap(_keyed, "key", nb).with_output_types(KeyedBatch)
                | "GroupBands" >> GroupBySpilled(self._spill)
                | "BandPairs" >> beam.FlatMap(_pairs_of_bucket, s.bucket_cap).with_outputs("stats", main="pairs"))
        cand.pairs.element_type = pa.RecordBatch
        bucket_stats = cand.stats | "BucketStats" >> beam.CombineGlobally(
            _MergeTotals(("buckets", "largest_bucket", "oversized_buckets", "oversized_rows"), maxed=("largest_bucket",)))
        candidates = (cand.pairs | "PairNodes" >> beam.Map(_pair_nodes)
                      | "CandidateNodes" >> beam.CombineGlobally(_UniqueNodes()))
        sigs = all_sigs | "CandidateSigs" >> beam.Map(_candidate_sigs, pvalue.AsSingleton(candidates)) \
            .with_output_types(pa.RecordBatch)
        sigs_keyed = sigs | "SigBucket" >> beam.FlatMap(_keyed, "node", nb).with_output_types(KeyedBatch)
        pairs_a = cand.pairs | "PairBucketA" >> beam.FlatMap(_keyed, "a", nb).with_output_types(KeyedBatch)
        with_a = ({"pairs": pairs_a, "sigs": sigs_keyed} | "JoinA" >> CoGroupBySpilled(self._spill)
                  | "SigA" >> beam.FlatMap(_join_a, s.num_perm, nb).with_output_types(KeyedBatch))
        verified = ({"pairs": with_a, "sigs": sigs_keyed} | "JoinB" >> CoGroupBySpilled(self._spill)
                    | "Verify" >> beam.FlatMap(_join_b, s.num_perm, s.threshold).with_outputs("checked",
                                                                                             main="pairs"))
        pairs = verified.pairs
        pairs.element_type = pa.RecordBatch
        checks = verified.checked | "SumChecks" >> beam.CombineGlobally(_MergeTotals(("candidates", "verified")))
        clusters = pair_clusters = pairs | "Clusters" >> beam.CombineGlobally(UnionFind(s.max_nodes))
        if s.action == "group" and s.group_by:   # near-duplicates and split.group_by groups, one component
            group_edges = rows | "GroupEdges" >> beam.Map(_group_edges, s.group_by).with_output_types(pa.RecordBatch)
            clusters = ((pairs, group_edges) | "AllEdges" >> beam.Flatten()
                        | "SplitGroups" >> beam.CombineGlobally(UnionFind(s.max_nodes)))
        root_ids = (rows | "RootIds" >> beam.Map(_root_ids, pvalue.AsSingleton(clusters))
                    | "RootIdTable" >> beam.CombineGlobally(_SortedTable()))
        applied = rows | "Apply" >> beam.ParDo(_ApplyFn(s, self._schema), pvalue.AsSingleton(clusters),
                                                pvalue.AsSingleton(root_ids)).with_outputs(
            _ApplyFn.DUPLICATES, main="rows")
        applied.rows.element_type = pa.RecordBatch
        applied[_ApplyFn.DUPLICATES].element_type = pa.RecordBatch
        stats = bucket_stats | "Stats" >> beam.Map(_stats, pvalue.AsSingleton(checks),
                                                    pvalue.AsSingleton(pair_clusters), s)
        return NearDedupResult(applied.rows, applied[_ApplyFn.DUPLICATES], pairs, pair_clusters, stats)


def finish_rows(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A split's rows without the stage's own columns."""
    return drop_columns(batch, [NODE, GROUP])


def finished_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of `finish_rows`' result."""
    return without_fields(schema, [NODE, GROUP])


def near_rows_schema(rows: pa.Schema, action: str) -> pa.Schema:
    """The columns of `NearDeduplicate`'s kept rows: the input's, `_nd_node`, and with action
    group `_near_dup_group`."""
    rows = rows.append(pa.field(NODE, pa.int64()))
    return rows.append(pa.field(GROUP, pa.string())) if action == "group" else rows



def as_near_duplicates(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Exact copies (`Deduplicate`'s duplicates) in `NEAR_DUPLICATES_SCHEMA`: reason
    `duplicate`, similarity 1, so both kinds share duplicates/."""
    n = batch.num_rows
    return pa.RecordBatch.from_arrays(list(batch.columns) + [pa.array(["duplicate"] * n, pa.string()),
                                                             pa.array([1.0] * n, pa.float64())],
                                      schema=NEAR_DUPLICATES_SCHEMA)
