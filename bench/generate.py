"""Adult-shaped CSV at any row count: jittered copies of the real UCI Adult rows.

Rows are drawn with replacement from ../shared/data/adult.data (Becker & Kohavi 1996,
CC BY 4.0); numeric columns are jittered so copies differ, except for a small share of
exact copies (duplicates to find) and of rows whose label is "?" (to quarantine).
Deterministic for a seed. Header row, comma separated, "?" marks a missing value.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

HERE = os.path.dirname(os.path.abspath(__file__))
ADULT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "adult.data"))
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
           "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
           "income"]
NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


def generate(rows: int, path: str, seed: int = 0, chunk: int = 1_000_000) -> str:
    base = pd.read_csv(ADULT, header=None, names=COLUMNS, skipinitialspace=True, dtype=str)
    rng = np.random.default_rng(seed)
    tmp = path + ".tmp"
    with pa.OSFile(tmp, "wb") as sink:
        writer = None
        done = 0
        while done < rows:
            n = min(chunk, rows - done)
            frame = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
            exact = rng.random(n) < 0.002                     # left as exact copies of a real row
            for col in NUMERIC:
                values = frame[col].astype(np.int64).to_numpy()
                jitter = rng.integers(-3, 4, n) if col != "fnlwgt" else rng.integers(-5000, 5001, n)
                values = np.where(exact | (values == 0), values, np.maximum(values + jitter, 0))
                frame[col] = values
            frame.loc[rng.random(n) < 0.005, "income"] = "?"
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pa_csv.CSVWriter(sink, table.schema)
            writer.write_table(table)
            done += n
        writer.close()
    os.replace(tmp, path)
    return path


def data_file(directory: str, name: str, rows: int, make) -> str:
    """`directory/name`, made by `make(rows, path)` unless it exists already (kept across runs)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        print(f"generating {rows:,} rows → {path}", flush=True)
        make(rows, path)
    return path


def bench_config(config_yaml: str, data: str, work: str, shards: Optional[int] = None,
                 output: Optional[dict] = None) -> str:
    """The benchmark config (`config_yaml`) reading `data` (and writing `shards` files per output
    folder, if given; `output` keys set over the config's), written into `work`; its path."""
    import yaml

    with open(config_yaml) as f:
        cfg = yaml.safe_load(f)
    cfg["inputs"][0]["path"] = data
    if shards is not None:
        cfg["output"]["shards"] = shards
    cfg["output"].update(output or {})
    path = os.path.join(work, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(generate(args.rows, args.out, args.seed))


if __name__ == "__main__":
    main()
