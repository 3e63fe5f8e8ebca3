"""Writes a synthetic phone-inspection data set: two monthly CSV exports of images from three
factories, and beside each the inspectors' labels (one row per image and inspector).

Deterministic for a seed. The labels tell the story of the label-consistency loop:
every image is labelled by three inspectors (a fifth of them by two only); `scratch` is
labelled consistently (pairwise agreement about 98%) and `discoloration` much less so
(about 90%), and camera cam-C's photos make discoloration harder still; some inspectors
write `Scratch`, `SCRATCH` or ` scratch` (normalised by the config); two inspectors who
disagree leave a tie. The image exports plant what real exports contain: exact
re-exports of earlier rows (same image_id), out-of-range and unparsable brightness (most
of them from factory F2), spam comments, and a few broken lines (wrong field count, an
unbalanced quote).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random

FIELDS = ["image_id", "brightness", "factory", "line", "camera", "comment"]
LABEL_FIELDS = ["image_id", "inspector_id", "defect"]
DEFECTS = [("none", 0.78), ("scratch", 0.15), ("discoloration", 0.07)]
INSPECTORS = [f"insp-{i:02d}" for i in range(1, 10)]
# The chance that one inspector gives the right class, per true class (and camera).
ACCURACY = {"none": 0.99, "scratch": 0.985, "discoloration": 0.91}
HARD_CAMERA, HARD_CAMERA_ACCURACY = "cam-C", 0.78         # discoloration on cam-C's photos
# What a wrong label is, per true class.
CONFUSION = {"none": ["scratch", "discoloration"], "scratch": ["none", "none", "discoloration"],
             "discoloration": ["none", "none", "scratch"]}
SPELLERS = {"insp-04": "Scratch", "insp-07": "SCRATCH", "insp-09": " scratch"}   # their way of writing scratch
COMMENTS = ["", "", "", "", "slight glare", "re-shot", "edge case", "lens dust?"]
SPAM = ["Click here for FREE money!!!", "free money, click here: http://spam.example"]
FAULT_RATE = {"F1": 0.02, "F2": 0.06, "F3": 0.02}         # out-of-range or unparsable brightness


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
            "defect": defect,                                            # the truth: not exported
            "brightness": f"{min(max(brightness, 0.0), 255.0)}",
            "factory": factory,
            "line": str(rng.randint(1, 4)),
            "camera": f"cam-{rng.choice('ABCD')}",
            "comment": rng.choice(COMMENTS),
        })
    return rows


def inspector_label(rng: random.Random, row, inspector: str) -> str:
    truth = row["defect"]
    accuracy = ACCURACY[truth]
    if truth == "discoloration" and row["camera"] == HARD_CAMERA:
        accuracy = HARD_CAMERA_ACCURACY
    label = truth if rng.random() < accuracy else rng.choice(CONFUSION[truth])
    if label == "scratch" and inspector in SPELLERS:
        label = SPELLERS[inspector]
    return label


def make_labels(rng: random.Random, rows):
    """(image_id, inspector_id, defect) rows: three inspectors per image, a fifth by two;
    a few images have no labels at all, a few labels are blank."""
    out = []
    for row in rows:
        if rng.random() < 0.005:
            continue                                                     # never labelled
        k = 2 if rng.random() < 0.2 else 3
        for inspector in sorted(rng.sample(INSPECTORS, k)):
            label = inspector_label(rng, row, inspector)
            if rng.random() < 0.004:
                label = ""                                               # a blank answer
            out.append(_csv_line({"image_id": row["image_id"], "inspector_id": inspector, "defect": label},
                                 LABEL_FIELDS))
    return out


def plant_faults(rng: random.Random, rows):
    out_lines = []
    for row in rows:
        r = rng.random()
        if r < FAULT_RATE[row["factory"]] * 2 / 3:
            row["brightness"] = rng.choice(["300.0", "-4.0"])            # out of range
        elif r < FAULT_RATE[row["factory"]]:
            row["brightness"] = "bright"                                 # not a number
        elif r < FAULT_RATE[row["factory"]] + 0.005:
            row["comment"] = rng.choice(SPAM)                            # spam
        out_lines.append(_csv_line(row, FIELDS))
        if rng.random() < 0.02:
            out_lines.append(_csv_line(row, FIELDS))                     # re-exported copy
        if rng.random() < 0.004:
            out_lines.append(rng.choice([
                "img-broken,120.5,F1,2",                                 # too few fields
                'img-broken,"120.5,F1,2,cam-A,oops',                     # unbalanced quote
            ]))
    return out_lines


def _csv_line(row, fields) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([row[f] for f in fields])
    return buf.getvalue()


def _write(path: str, header, lines) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(header) + "\n")
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    ap.add_argument("--rows", type=int, default=2500, help="images per monthly file")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for month in (1, 2):
        rows = make_rows(rng, month, args.rows, 1)
        labels = make_labels(rng, rows)
        lines = plant_faults(rng, rows)
        path = os.path.join(args.out, f"inspection-2025-{month:02d}.csv")
        _write(path, FIELDS, lines)
        labels_path = os.path.join(args.out, f"labels-2025-{month:02d}.csv")
        _write(labels_path, LABEL_FIELDS, labels)
        print(f"wrote {path}: {len(lines)} rows; {labels_path}: {len(labels)} labels")


if __name__ == "__main__":
    main()
