"""The near-dedup stage alone (`NearDeduplicate`) on generated SMS-shaped texts, beside
datasketch (MinHash + MinHashLSH insert and query, one core) doing the same.

    python bench/near_dedup.py --rows 1000000 [--datasketch-rows 1000000] [--what beam|datasketch|both]

Texts: 3-30 words from a 5,000-word vocabulary, a quarter of them copies of an earlier text
with 0-3 words changed, and 2% from a handful of boilerplate templates with a number in them
(so some band keys hold thousands of rows). Each side runs in its own process, so each
peak memory (`ru_maxrss`) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def generate(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    templates = ["your account has won a prize call now to claim code {}",
                 "free entry to win tickets text win to {} now",
                 "urgent you have a parcel waiting reply with code {}"]
    lengths = rng.integers(3, 31, n)
    words = vocab[rng.integers(0, len(vocab), int(lengths.sum()))]
    ends = np.cumsum(lengths)
    texts = [" ".join(words[e - k:e]) for e, k in zip(ends, lengths)]
    kind = rng.random(n)
    for i in np.flatnonzero((kind < 0.25) & (np.arange(n) > 0)):
        src = texts[int(rng.integers(0, i))].split()
        for _ in range(int(rng.integers(0, 4))):
            src[int(rng.integers(0, len(src)))] = str(vocab[int(rng.integers(0, len(vocab)))])
        texts[i] = " ".join(src)
    for i in np.flatnonzero(kind > 0.98):
        texts[i] = templates[int(rng.integers(0, 3))].format(int(rng.integers(0, 100)))
    return texts


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_stats(stats: dict, path: str, dropped: int) -> None:
    with open(path, "w") as f:
        json.dump(dict(stats, dropped=dropped), f)


def run_beam(texts: list, batch: int = 65536) -> dict:
    import apache_beam as beam
    import pyarrow as pa

    from transforms.batches import EXAMPLE_ID, ROW, SOURCE
    from transforms.clean.minhash import optimal_param
    from transforms.clean.near_dedup import NearDedupSpec, NearDeduplicate

    n = len(texts)
    table = pa.table({"text": pa.array(texts, pa.string()), EXAMPLE_ID: pa.array([str(i) for i in range(n)]),
                      SOURCE: pa.array(["bench"] * n), ROW: pa.array(np.arange(1, n + 1))})
    batches = table.to_batches(max_chunksize=batch)
    bands, rows = optimal_param(0.8, 128, 0.1, 0.9)
    spec = NearDedupSpec(columns=("text",), threshold=0.8, bands=bands, rows=rows)
    import tempfile

    stats_path = os.path.join(tempfile.mkdtemp(), "stats.json")
    start = time.time()
    with beam.Pipeline() as p:
        res = p | beam.Create(batches, reshuffle=False) | NearDeduplicate(spec, 16)
        dropped = res.duplicates | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum)
        res.stats | beam.Map(_write_stats, stats_path, beam.pvalue.AsSingleton(dropped))
    wall = time.time() - start
    out = json.load(open(stats_path))
    return {"side": "beam", "rows": n, "seconds": round(wall, 1), "rows_per_s": round(n / wall),
            "peak_mib": round(peak_mib()), "bands": bands, "rows_per_band": rows, "stage": out}


def run_datasketch(texts: list) -> dict:
    from datasketch import MinHash, MinHashLSH

    n = len(texts)
    start = time.time()
    lsh = MinHashLSH(threshold=0.8, num_perm=128, weights=(0.1, 0.9))
    # permutations made once and shared (as `MinHash.bulk` does), not drawn again per MinHash
    perms = MinHash(num_perm=128, scheme="legacy").permutations
    mhs, candidates = [], 0
    for i, t in enumerate(texts):
        w = " ".join(t.split()).lower().split()
        sh = {" ".join(w[j:j + 3]) for j in range(max(1, len(w) - 2))}
        m = MinHash(num_perm=128, permutations=perms, scheme="legacy")   # the stage's scheme
        m.update_batch([s.encode() for s in sh])
        found = lsh.query(m)
        candidates += len(found)
        lsh.insert(i, m)
        mhs.append(m)
    wall = time.time() - start
    return {"side": "datasketch", "rows": n, "seconds": round(wall, 1), "rows_per_s": round(n / wall),
            "peak_mib": round(peak_mib()), "bands": lsh.b, "rows_per_band": lsh.r, "candidate_pairs": candidates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--datasketch-rows", type=int, default=None, help="default: --rows")
    ap.add_argument("--what", choices=["beam", "datasketch", "both"], default="both")
    args = ap.parse_args()
    if args.what == "both":   # each side in its own process: its own peak memory
        for what, rows in (("beam", args.rows), ("datasketch", args.datasketch_rows or args.rows)):
            subprocess.run([sys.executable, __file__, "--what", what, "--rows", str(rows)], check=True)
        return
    texts = generate(args.rows)
    result = run_beam(texts) if args.what == "beam" else run_datasketch(texts)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
