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

`relabel` is the second labelling round of `make demo`: three senior reviewers, working to a
clarified guideline, label the queued images of the weakest class; their labels are written
as one more long-form file (`labels-2025-03-review.csv`), which the config's glob picks up.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
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


def generate(rows_per_file: int, seed: int):
    """(month, rows with their true `defect`, label lines, export lines) for each month."""
    rng = random.Random(seed)
    for month in (1, 2):
        rows = make_rows(rng, month, rows_per_file, 1)
        labels = make_labels(rng, rows)
        lines = plant_faults(rng, rows)
        yield month, rows, labels, lines


REVIEW_FILE = "labels-2025-03-review.csv"          # matches the config's labels-*.csv, after the months
REVIEWERS = ["rev-01", "rev-02", "rev-03"]
REVIEWER_ACCURACY = 0.97                           # the clarified guideline, on every camera


def relabel(out: str, image_ids, rows_per_file: int = 2500, seed: int = 7) -> str:
    """The second round: each of `image_ids` labelled by the three reviewers (the truth,
    known from the same seed, with REVIEWER_ACCURACY); returns the file written."""
    truth = {r["image_id"]: r["defect"] for _, rows, _, _ in generate(rows_per_file, seed) for r in rows}
    rng = random.Random(seed + 1000)
    lines = []
    for image_id in sorted(set(image_ids)):
        if image_id not in truth:
            continue
        true = truth[image_id]
        for reviewer in REVIEWERS:
            label = true if rng.random() < REVIEWER_ACCURACY else rng.choice(CONFUSION[true])
            lines.append(_csv_line({"image_id": image_id, "inspector_id": reviewer, "defect": label}, LABEL_FIELDS))
    path = os.path.join(out, REVIEW_FILE)
    _write(path, LABEL_FIELDS, lines)
    return path


EXPORT_FILE = "review-round-2.json"      # the second round as Label Studio exports it (`dataprep review pull`)
REVIEWER_USER_IDS = {"rev-01": 101, "rev-02": 102, "rev-03": 103}   # Label Studio exports a user's numeric id


def relabel_export(out: str, tasks, image_ids, rows_per_file: int = 2500, seed: int = 7) -> str:
    """The second round as Label Studio's JSON export would hold it after the reviewers labelled
    the queue's tasks (`tasks`: the run's `review/label_studio_tasks.json`, as `dataprep review
    push` imported them): the tasks of `image_ids`, each with one annotation per reviewer (the
    truth, known from the same seed, with REVIEWER_ACCURACY). Returns the file written."""
    truth = {r["image_id"]: r["defect"] for _, rows, _, _ in generate(rows_per_file, seed) for r in rows}
    rng = random.Random(seed + 1000)
    wanted = set(image_ids)
    exported = []
    for n, task in enumerate(t for t in tasks if t["data"]["example_id"] in wanted and t["data"]["example_id"] in truth):
        true = truth[task["data"]["example_id"]]
        annotations = []
        for reviewer in REVIEWERS:
            label = true if rng.random() < REVIEWER_ACCURACY else rng.choice(CONFUSION[true])
            annotations.append({"id": 100 * n + len(annotations) + 1, "completed_by": REVIEWER_USER_IDS[reviewer],
                                "was_cancelled": False, "result": [
                                    {"from_name": "label", "to_name": "item", "type": "choices",
                                     "value": {"choices": [label]}}]})
        exported.append({"id": n + 1, "data": task["data"], "annotations": annotations})
    path = os.path.join(out, EXPORT_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(exported, f, indent=1)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    ap.add_argument("--rows", type=int, default=2500, help="images per monthly file")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in (REVIEW_FILE, EXPORT_FILE):          # a second round belongs to the run that asked for it
        stale = os.path.join(args.out, name)
        if os.path.exists(stale):
            os.remove(stale)
    for month, rows, labels, lines in generate(args.rows, args.seed):
        path = os.path.join(args.out, f"inspection-2025-{month:02d}.csv")
        _write(path, FIELDS, lines)
        labels_path = os.path.join(args.out, f"labels-2025-{month:02d}.csv")
        _write(labels_path, LABEL_FIELDS, labels)
        print(f"wrote {path}: {len(lines)} rows; {labels_path}: {len(labels)} labels")


if __name__ == "__main__":
    main()
