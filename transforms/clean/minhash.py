"""MinHash and LSH on Arrow arrays, numpy-vectorised: the maths of the near-dedup stage
(`near_dedup.py` says how the steps fit together). Signatures equal datasketch's
(`datasketch.MinHash(num_perm, seed)` with its default `sha1_hash32`, the (a·h + b) mod 2⁶¹−1
permutations); `optimal_param` is datasketch's `_optimal_param`. Nothing here knows Beam."""

import hashlib
from functools import lru_cache
from typing import Dict, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import hash_arrays

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)


def normalized_text(batch: pa.RecordBatch | pa.Table, columns: Sequence[str]) -> pa.Array:
    """The compared text: each column trimmed, case-folded, whitespace collapsed (as
    `dedup.normalize`), nulls as empty, columns joined by a space."""
    parts = []
    for c in columns:
        col = batch.column(c)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        col = pc.cast(col, pa.string()) if not pa.types.is_string(col.type) else col
        col = pc.utf8_lower(pc.utf8_trim_whitespace(pc.replace_substring_regex(col, r"\s+", " ")))
        parts.append(pc.fill_null(col, ""))
    if len(parts) == 1:
        return parts[0]
    return pc.utf8_trim_whitespace(pc.binary_join_element_wise(*parts, " "))


def shingle_table(texts: pa.Array, kind: str = "words", size: int = 3) -> Tuple[pa.Array, np.ndarray]:
    """(shingles, the row of each shingle), rows ascending; a row's shingles may repeat
    (a set is what MinHash sees). Vectorised over the batch (Arrow kernels, no per-row loop)."""
    n = len(texts)
    if kind == "words":
        tokens = pc.utf8_split_whitespace(texts)
        counts = pc.list_value_length(tokens).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(tokens)
        empty = pc.equal(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
        if empty.any():   # "" splits into [""]: no words
            counts = counts - np.bincount(np.repeat(np.arange(n), counts)[empty], minlength=n)
            flat = flat.filter(pa.array(~empty))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, np.int64)
        per_row = np.where(counts > 0, np.maximum(counts - size + 1, 1), 0)
        row_of = np.repeat(np.arange(n), per_row)
        first = np.repeat(starts, per_row) + (np.arange(per_row.sum()) - np.repeat(np.cumsum(per_row) - per_row,
                                                                                   per_row))
        ends = np.repeat(starts + counts, per_row)
        pieces = []
        for k in range(size):
            idx = first + k
            pieces.append(flat.take(pa.array(idx, mask=idx >= ends)))   # past a short row's end: null, skipped
        if not len(row_of):
            return pa.array([], pa.string()), row_of
        shingles = pieces[0] if size == 1 else pc.binary_join_element_wise(*pieces, " ", null_handling="skip")
        return shingles, row_of
    if kind == "chars":
        lengths = pc.utf8_length(texts).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        out, rows = [], []
        short = np.flatnonzero((lengths > 0) & (lengths < size))
        if len(short):
            out.append(texts.take(pa.array(short)))
            rows.append(short)
        for j in range(0, int(lengths.max(initial=0)) - size + 1):   # one Arrow call per position, not per row
            live = np.flatnonzero(lengths >= j + size)
            out.append(pc.utf8_slice_codeunits(texts.take(pa.array(live)), j, j + size))
            rows.append(live)
        if not out:
            return pa.array([], pa.string()), np.zeros(0, np.int64)
        row_of = np.concatenate(rows)
        order = np.argsort(row_of, kind="stable")
        return pa.concat_arrays(out).take(pa.array(order)), row_of[order]
    raise ValueError(f"unknown shingle kind {kind!r}")


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """datasketch's (a, b) for `MinHash(num_perm, seed)`."""
    gen = np.random.RandomState(seed)
    ab = np.array([(gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
                   for _ in range(num_perm)], dtype=np.uint64).T
    return ab[0].copy(), ab[1].copy()


def sha1_hash32(values: pa.Array) -> np.ndarray:
    """datasketch's `sha1_hash32` of each value's UTF-8 bytes (first 4 bytes of SHA-1, little-endian)."""
    digests = b"".join(hashlib.sha1(v).digest()[:4] for v in pc.cast(values, pa.binary()).to_pylist())
    return np.frombuffer(digests, "<u4").astype(np.uint64)


def minhash_signatures(shingles: pa.Array, row_of: np.ndarray, num_rows: int, num_perm: int = 128,
                       seed: int = 1, chunk: int = 8192) -> Tuple[np.ndarray, np.ndarray]:
    """(signatures uint32 [num_rows, num_perm], has_shingles bool [num_rows]).

    Each distinct shingle of the batch is hashed and permuted once; a row's value per
    permutation is the minimum over its shingles. A row without shingles has all values
    2³²−1 (datasketch's empty MinHash) and `has_shingles` False.
    """
    a, b = permutations(num_perm, seed)
    sig = np.full((num_rows, num_perm), MAX_HASH, np.uint64)
    has = np.zeros(num_rows, bool)
    if len(row_of) == 0:
        return sig.astype(np.uint32), has
    encoded = pc.dictionary_encode(shingles)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    hv = sha1_hash32(encoded.dictionary)
    with np.errstate(over="ignore"):   # uint64 wrap-around, as datasketch's own arithmetic
        phv = ((hv[:, None] * a[None, :] + b[None, :]) % MERSENNE_PRIME) & MAX_HASH
    phv = phv.astype(np.uint32)
    rows_present, starts = np.unique(row_of, return_index=True)
    ends = np.append(starts[1:], len(row_of))
    has[rows_present] = True
    out = np.empty((len(rows_present), num_perm), np.uint32)
    r = 0
    while r < len(rows_present):   # rows in chunks of about `chunk` shingles: the gathered block stays small
        lo = starts[r]
        r_hi = max(int(np.searchsorted(starts, lo + chunk, side="left")), r + 1)
        block = phv[codes[lo:ends[r_hi - 1]]]
        out[r:r_hi] = np.minimum.reduceat(block, starts[r:r_hi] - lo, axis=0)
        r = r_hi
    sig = sig.astype(np.uint32)
    sig[rows_present] = out
    return sig, has


def _false_positive(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad
    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]


def _false_negative(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad
    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]


@lru_cache(maxsize=64)
def optimal_param(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> Tuple[int, int]:
    """(bands, rows) minimising the weighted integrated false-positive and false-negative
    probabilities at `threshold`: datasketch's `_optimal_param`, text-dedup's `optimal_param`."""
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            error = (_false_positive(threshold, b, r) * false_positive_weight
                     + _false_negative(threshold, b, r) * false_negative_weight)
            if error < best:
                best, opt = error, (b, r)
    return opt


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit key per (row, band) [num_rows, bands]: the hash of the band's values and its index."""
    n = sig.shape[0]
    out = np.empty((n, bands), np.uint64)
    for i in range(bands):
        cols = [pa.array(sig[:, i * rows + j]) for j in range(rows)]
        out[:, i] = hash_arrays(cols, n, seed=f"band-{i}")
    return out


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """datasketch's `MinHash.jaccard`: the share of equal values, per row pair."""
    return (sig_a == sig_b).mean(axis=1)


def band_pairs(keys: np.ndarray, nodes: np.ndarray, cap: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
    """Candidate pairs (a < b) of the rows sharing a band key, and bucket statistics.

    Keys with at most `cap` rows give every pair; a larger key pairs its `cap` lowest
    nodes with every node (anchors), so no key costs more than `cap × size`.
    """
    stats = {"buckets": 0, "largest_bucket": 0, "oversized_buckets": 0, "oversized_rows": 0}
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), stats
    order = np.lexsort((nodes, keys))
    k, v = keys[order], nodes[order]
    bounds = np.flatnonzero(np.diff(k)) + 1
    starts = np.concatenate([[0], bounds])
    sizes = np.diff(np.concatenate([starts, [len(k)]]))
    multi = sizes > 1
    stats["buckets"] = int(multi.sum())
    stats["largest_bucket"] = int(sizes.max(initial=0))
    A, B = [], []
    # small keys grouped by size: all pairs of all keys of one size at once
    for size in np.unique(sizes[multi & (sizes <= cap)]):
        s = starts[sizes == size]
        i, j = np.triu_indices(int(size), 1)
        A.append(v[(s[:, None] + i[None, :]).ravel()])
        B.append(v[(s[:, None] + j[None, :]).ravel()])
    for s, size in zip(starts[sizes > cap], sizes[sizes > cap]):
        stats["oversized_buckets"] += 1
        stats["oversized_rows"] += int(size)
        members = v[s:s + size]
        anchors = members[:cap]
        a = np.repeat(anchors, size)
        b = np.tile(members, len(anchors))
        keep = a < b
        A.append(a[keep])
        B.append(b[keep])
    if not A:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), stats
    a, b = np.concatenate(A), np.concatenate(B)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1], stats


def union_find_roots(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(nodes, their component's lowest node) of the graph with edges (a, b), vectorised:
    min-label propagation with pointer jumping until nothing changes."""
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inv[:len(a)], inv[len(a):]
    label = np.arange(len(nodes))
    while True:
        m = np.minimum(label[ia], label[ib])
        new = label.copy()
        np.minimum.at(new, ia, m)
        np.minimum.at(new, ib, m)
        while True:           # pointer jumping: label of label
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            break
        label = new
    return nodes, nodes[label]
