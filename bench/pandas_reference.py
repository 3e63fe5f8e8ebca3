"""The pandas + scikit-learn script a user would write for the same work, as the yardstick.

read CSV ("?" is missing) → drop rows without a label → exact dedup → stratified
60/20/20 → z-score numerics and integerise categoricals, fitted on train → Parquet per split.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    start = time.time()
    frame = pd.read_csv(args.input, na_values=["?"], skipinitialspace=True)
    frame = frame.dropna(subset=["income"])
    frame = frame.drop_duplicates()
    train, rest = train_test_split(frame, train_size=0.6, stratify=frame["income"], random_state=42)
    dev, test = train_test_split(rest, train_size=0.5, stratify=rest["income"], random_state=42)
    mean, std = train[NUMERIC].mean(), train[NUMERIC].std(ddof=0)
    vocab = {c: {v: i for i, v in enumerate(train[c].value_counts().index)} for c in CATEGORICAL}
    os.makedirs(args.output, exist_ok=True)
    for name, part in (("train", train), ("dev", dev), ("test", test)):
        out = part.copy()
        for c in NUMERIC:
            out[f"{c}_xf"] = ((out[c] - mean[c]) / std[c]).astype(np.float32)
        for c in CATEGORICAL:
            out[f"{c}_xf"] = out[c].map(vocab[c]).fillna(len(vocab[c])).astype(np.int64)
        out.to_parquet(os.path.join(args.output, f"{name}.parquet"), index=False)
    print(f"pandas reference: {len(frame)} rows in {time.time() - start:.2f} s")


if __name__ == "__main__":
    main()
