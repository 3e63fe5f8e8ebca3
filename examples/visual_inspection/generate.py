"""Writes a synthetic phone-inspection data set: two monthly CSV exports from three factories.

Deterministic for a seed. Besides clean rows it plants what real exports contain:
exact re-exports of earlier rows (same image_id), label spelling variants ("Scratch",
" scratch"), missing labels, out-of-range and unparsable brightness, spam comments,
and a few broken lines (wrong field count, an unbalanced quote).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random

FIELDS = ["image_id", "defect", "brightness", "factory", "line", "camera", "inspector_id", "comment"]
DEFECTS = [("none", 0.78), ("scratch", 0.15), ("discoloration", 0.07)]
SPELLINGS = {"scratch": ["Scratch", " scratch", "SCRATCH"], "discoloration": ["Discoloration"], "none": ["None"]}
COMMENTS = ["", "", "", "", "slight glare", "re-shot", "edge case", "lens dust?"]
SPAM = ["Click here for FREE money!!!", "free money, click here: http://spam.example"]


def make_rows(rng: random.Random, month: int, n: int, start_id: int):
    rows = []
    for i in range(n):
        factory = rng.choice(["F1", "F2", "F3"])
        r = rng.random()
        defect = "none" if r < DEFECTS[0][1] else "scratch" if r < DEFECTS[0][1] + DEFECTS[1][1] else "discoloration"
        base = {"F1": 120, "F2": 135, "F3": 110}[factory]
        brightness = round(rng.gauss(base - (15 if defect == "discoloration" else 0), 18), 1)
        rows.append({
            "image_id": f"img-{month:02d}-{start_id + i:06d}",
            "defect": defect,
            "brightness": f"{min(max(brightness, 0.0), 255.0)}",
            "factory": factory,
            "line": str(rng.randint(1, 4)),
            "camera": f"cam-{rng.choice('ABCD')}",
            "inspector_id": f"insp-{rng.randint(1, 12):02d}",
            "comment": rng.choice(COMMENTS),
        })
    return rows


def plant_faults(rng: random.Random, rows):
    out_lines = []
    for row in rows:
        r = rng.random()
        if r < 0.03 and row["defect"] in SPELLINGS:
            row["defect"] = rng.choice(SPELLINGS[row["defect"]])        # normalised by the config
        elif r < 0.04:
            row["defect"] = ""                                           # missing label
        elif r < 0.05:
            row["brightness"] = rng.choice(["300.0", "-4.0"])            # out of range
        elif r < 0.055:
            row["brightness"] = "bright"                                 # not a number
        elif r < 0.06:
            row["comment"] = rng.choice(SPAM)                            # spam
        out_lines.append(_csv_line(row))
        if rng.random() < 0.02:
            out_lines.append(_csv_line(row))                             # re-exported copy
        if rng.random() < 0.004:
            out_lines.append(rng.choice([
                "img-broken,none,120.5,F1,2",                            # too few fields
                'img-broken,none,"120.5,F1,2,cam-A,insp-01,oops',        # unbalanced quote
            ]))
    return out_lines


def _csv_line(row) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([row[f] for f in FIELDS])
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    ap.add_argument("--rows", type=int, default=2500, help="rows per monthly file")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for month in (1, 2):
        lines = plant_faults(rng, make_rows(rng, month, args.rows, 1))
        path = os.path.join(args.out, f"inspection-2025-{month:02d}.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(",".join(FIELDS) + "\n")
            f.write("\n".join(lines) + "\n")
        print(f"wrote {path}: {len(lines)} rows")


if __name__ == "__main__":
    main()
