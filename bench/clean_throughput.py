"""Throughput of ingest + clean alone (read, type, rules, dedup), no split/TFT/writes.

    python bench/clean_throughput.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import apache_beam as beam
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from generate import generate  # noqa: E402
from pipeline.build import dedup_spec, reader_specs, validate_spec  # noqa: E402
from pipeline.config import parse_config  # noqa: E402
from transforms.clean import Deduplicate, ValidateRows  # noqa: E402
from transforms.read import ReadInputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    data = os.path.join(HERE, "data", f"adult-{args.rows}.csv")
    if not os.path.exists(data):
        os.makedirs(os.path.dirname(data), exist_ok=True)
        generate(args.rows, data)
    raw = yaml.safe_load(open(os.path.join(HERE, "config.yaml")))
    raw["inputs"][0]["path"] = data
    raw.pop("features")
    cfg = parse_config(raw)
    start = time.time()
    with beam.Pipeline() as p:
        read = p | beam.Create([(0, data)]) | ReadInputs(reader_specs(cfg), list(cfg.input_columns))
        clean = read.rows | ValidateRows(validate_spec(cfg))
        deduped = clean.rows | Deduplicate(dedup_spec(cfg))
        (deduped.rows | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum)
         | beam.Map(lambda n: print(f"kept {n} rows")))
    wall = time.time() - start
    print(f"ingest+clean of {args.rows:,} rows: {wall:.1f} s, {args.rows / wall:,.0f} rows/s")


if __name__ == "__main__":
    main()
