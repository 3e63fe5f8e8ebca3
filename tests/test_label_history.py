"""Labelling rounds and the label history: several annotation sources (a table, a real Label
Studio export, a table again), the later round winning per annotator and example, every
label kept with its file and round (annotations/), the faults of each reason, the MLMD
record (annotation files as the labels stage's inputs, the export linked to the review queue
it answers) and `dataprep lineage --example`. Two runs of the example, shared by the tests."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipeline.config import AnnotationsConfig
from tests.conftest import TESTS, example_config, plain_mlmd_store, run_cli
from transforms.labels.annotations import (HISTORY_SCHEMA, UNKNOWN_EXAMPLE, UNKNOWN_LABEL, AnnotationsSpec,
                                           attach_annotations, tidy_annotations)

EXPORT = os.path.join(TESTS, "data", "label_studio_export.json")
EXAMPLE = "img-01-000013"     # a tie in round 1 (scratch, discoloration, none): queued, relabelled in round 2


def _annotations(rows):
    return pa.table({"id": [r[0] for r in rows], "annotator": [r[1] for r in rows], "label": [r[2] for r in rows],
                     "round": pa.array([r[3] for r in rows], pa.int64()), "_source": [r[4] for r in rows],
                     "_row": pa.array([r[5] for r in rows], pa.int64())})


def test_the_later_round_wins_and_every_label_is_kept():
    examples = pa.table({"id": ["a", "b"], "x": [1, 2]})
    ann = _annotations([("a", "u", "p", 1, "r1.csv", 2), ("a", "u", "q", 2, "r2.json", 1),   # u changed a: q wins
                        ("a", "v", "p", 1, "r1.csv", 3), ("a", "v", "q", 1, "r1.csv", 9),   # v twice in a round
                        ("b", "u", "q", 1, "r1.csv", 4), ("zz", "u", "p", 2, "r2.json", 2)])   # zz: no example
    joined, stats, history, faults = attach_annotations(examples, ann, "id", ["u", "v"])
    assert joined.column("_label_matrix").to_pylist() == [["q", "p"], ["q", None]]
    assert [json.loads(t) for t in joined.column("annotations").to_pylist()] == [{"u": "q", "v": "p"}, {"u": "q"}]
    assert {k: stats[k] for k in ("annotations", "orphan", "repeated", "superseded")} == \
        {"annotations": 6, "orphan": 1, "repeated": 1, "superseded": 1}
    assert stats["round:1"] == 4 and stats["used:1"] == 2 and stats["round:2"] == 1 and stats["used:2"] == 1
    assert history.schema == HISTORY_SCHEMA and history.num_rows == 5
    used = {(r["example_id"], r["annotator"], r["label"], r["round"]): r["used"] for r in history.to_pylist()}
    assert used == {("a", "u", "q", 2): True, ("a", "u", "p", 1): False, ("a", "v", "p", 1): True,
                    ("a", "v", "q", 1): False, ("b", "u", "q", 1): True}
    assert faults.column("reason").to_pylist() == [UNKNOWN_EXAMPLE] and faults.column("_row").to_pylist() == [2]


def test_labels_outside_the_classes_are_faults():
    batch = pa.RecordBatch.from_pydict({"id": ["a", "b", "c", None], "annotator": ["u"] * 4,
                                        "label": [" Scratch", "dent", "none", "none"], "round": [1, 1, 2, 2],
                                        "_source": ["s"] * 4, "_row": [1, 2, 3, 4]})
    spec = AnnotationsSpec(sources=(), classes=("none", "scratch"), label_trim=True, label_case_fold=True)
    rows, faults = tidy_annotations(batch, spec)
    assert rows.column("label").to_pylist() == ["scratch", "none"]
    assert faults.column("reason").to_pylist() == [UNKNOWN_LABEL, "annotation_missing_field"]
    rows, faults = tidy_annotations(batch, AnnotationsSpec(sources=()))   # no classes given: any label
    assert rows.num_rows == 3 and faults.num_rows == 1


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """Run A: the example (300 images a month), one source. Run B: three sources, oldest
    first: the inspectors' labels, the real Label Studio export (its tasks' run id set to
    A's, as a push of A's queue gives) and a table where insp-02 changes their mind."""
    from pipeline.run import run

    folder = tmp_path_factory.mktemp("rounds")
    out = folder / "out"
    store = str(folder / "m.sqlite")
    cfg_a = example_config(folder / "data", rows=300)
    a = run(cfg_a, output=str(out), store=store)
    with open(EXPORT, encoding="utf-8") as f:
        tasks = json.load(f)
    for t in tasks:
        t["data"]["dataprep_run_id"] = a["run_id"]
    export = folder / "round-2.json"
    export.write_text(json.dumps(tasks))
    (folder / "round-3.csv").write_text(f"image_id,inspector_id,defect\n{EXAMPLE},insp-02,none\n")
    cfg_b = cfg_a.model_copy(deep=True)
    first = cfg_b.labels.annotations
    cfg_b.labels.annotations = [first, AnnotationsConfig(path=str(export), format="label_studio"),
                                AnnotationsConfig(path=str(folder / "round-3.csv"), id="image_id",
                                                  annotator="inspector_id", label="defect")]
    b = run(cfg_b, output=str(out), store=store)

    def report(summary):
        with open(os.path.join(summary["output"], "report.json"), encoding="utf-8") as f:
            return json.load(f)

    return {"a": a, "b": b, "report_a": report(a), "report_b": report(b), "store": store, "export": str(export),
            "round3": str(folder / "round-3.csv")}


def test_rounds_counted_and_faults_with_reasons(rounds):
    ann = rounds["report_b"]["labels"]["annotations"]
    assert ann["rounds"]["2"] == {"labels": 3, "used": 3} and ann["rounds"]["3"] == {"labels": 1, "used": 1}
    assert ann["rounds"]["1"]["labels"] == rounds["report_a"]["labels"]["annotations"]["rounds"]["1"]["labels"]
    assert ann["rounds"]["1"]["used"] == ann["rounds"]["1"]["labels"] - 1 and ann["superseded"] == 1
    assert ann["label_studio"] == {"tasks": 6, "annotations": 7, "cancelled": 1, "unannotated_tasks": 1}
    before = rounds["report_a"]["labels"]["annotations"]["fault_reasons"]
    assert ann["fault_reasons"]["annotation_several_choices"] == 1 and ann["fault_reasons"]["annotation_no_choice"] == 1
    assert ann["fault_reasons"][UNKNOWN_EXAMPLE] == before[UNKNOWN_EXAMPLE] + 1      # img-99-999999
    faults = ds.dataset(os.path.join(rounds["b"]["output"], "annotation_faults")).to_table().to_pandas()
    assert len(faults) == ann["faults"] == sum(ann["fault_reasons"].values())
    ghost = faults[faults["record"].str.contains("img-99-999999")]
    assert list(ghost["reason"]) == [UNKNOWN_EXAMPLE] and list(ghost["_source"]) == [rounds["export"]]


def test_the_history_keeps_every_label_with_its_file_and_round(rounds):
    history = ds.dataset(os.path.join(rounds["b"]["output"], "annotations")).to_table()
    mine = sorted((r["round"], r["annotator"], r["label"], r["used"], os.path.basename(r["_source"]))
                  for r in history.to_pylist() if r["example_id"] == EXAMPLE)
    assert mine == [(1, "insp-02", "scratch", False, "labels-2025-01.csv"),
                    (1, "insp-04", "discoloration", True, "labels-2025-01.csv"),
                    (1, "insp-05", "none", True, "labels-2025-01.csv"),
                    (2, "3", "scratch", True, "round-2.json"), (2, "4", "none", True, "round-2.json"),
                    (3, "insp-02", "none", True, "round-3.csv")]
    raw = ds.dataset(os.path.join(rounds["b"]["output"], "raw")).to_table().to_pandas()
    row = raw[raw["example_id"] == EXAMPLE].iloc[0]
    assert row["defect"] == "none" and row["label_count"] == 5 and abs(row["label_agreement"] - 0.6) < 1e-12
    assert json.loads(row["annotations"]) == {"3": "scratch", "4": "none", "insp-02": "none",
                                              "insp-04": "discoloration", "insp-05": "none"}


def test_lineage_of_an_example_shows_its_labels_per_round_and_run(rounds, capsys):
    a, b = rounds["a"]["run_id"], rounds["b"]["run_id"]
    code, text, err = run_cli(["lineage", "--example", EXAMPLE, "--store", rounds["store"], "--format", "json"],
                              capsys)
    assert code == 0, err
    h = json.loads(text)["label_history"]
    assert len(h["labels"]) == 6 and [e["round"] for e in h["labels"]] == [1, 1, 1, 2, 2, 3]
    changed = [e for e in h["labels"] if e["annotator"] == "insp-02" and e["label"] == "scratch"][0]
    assert changed["used_in"] == [a] and changed["superseded_in"] == [b]
    assert [e["source"] for e in h["labels"] if e["round"] == 2] == [rounds["export"]] * 2
    runs = {r["run_id"]: r for r in h["runs"]}
    assert runs[a]["consensus"] is None and runs[a]["queued"] == "tie" and runs[a]["where"] == "quarantine"
    assert runs[b]["consensus"] == "none" and runs[b]["label_count"] == 5 and runs[b]["where"] in ("train", "dev",
                                                                                                    "test")
    code, text, _ = run_cli(["lineage", "--example", EXAMPLE, "--store", rounds["store"]], capsys)
    assert code == 0 and "labels of img-01-000013 (6):" in text
    assert f"{b}  none (agreement 0.60 of 5 labels)" in text and f"{a}  no consensus, quarantine; queued" in text
    assert "ReviewQueue" in text and "dataprep.label_studio" in text     # the graph reaches round 1's queue
    code, text, _ = run_cli(["lineage", "--example", EXAMPLE, "--run", a, "--store", rounds["store"]], capsys)
    # a tie is in no split of A: it is found in quarantine, then its labels
    assert code == 0 and text.startswith("example img-01-000013 (run %s): quarantined: label_tie (stage labels)" % a)
    assert "\nlabels of img-01-000013" in text


def test_mlmd_links_the_export_to_the_queue_it_answers(rounds):
    from ml_metadata.proto import metadata_store_pb2 as pb

    store = plain_mlmd_store(rounds["store"])
    a, b = rounds["a"]["run_id"], rounds["b"]["run_id"]
    ctx = store.get_context_by_type_and_name("pipeline_run", b)
    execs = {e.name.split(":", 1)[1]: e for e in store.get_executions_by_context(ctx.id)}
    arts = {x.id: x for x in store.get_artifacts_by_context(ctx.id)}
    types = {t.id: t.name for t in store.get_artifact_types()}

    def io(execution):
        events = store.get_events_by_execution_ids([execution.id])
        return ([arts.get(e.artifact_id) or store.get_artifacts_by_id([e.artifact_id])[0] for e in events
                 if e.type == pb.Event.INPUT],
                [arts.get(e.artifact_id) or store.get_artifacts_by_id([e.artifact_id])[0] for e in events
                 if e.type == pb.Event.OUTPUT])

    ingest_in, _ = io(execs["ingest"])
    assert {x.uri.rsplit("/", 1)[1] for x in ingest_in} == {"inspection-2025-01.csv", "inspection-2025-02.csv"}
    labels_in, labels_out = io(execs["labels"])
    files = sorted((x.custom_properties["round"].int_value, os.path.basename(x.uri))
                   for x in labels_in if types[x.type_id] == "DataFile")
    assert files == [(1, "labels-2025-01.csv"), (1, "labels-2025-02.csv"), (2, "round-2.json"), (3, "round-3.csv")]
    assert {types[x.type_id] for x in labels_out} == {"LabelAgreement", "LabelHistory", "ReviewQueue"}
    split_in, _ = io(execs["split"])
    assert {types[x.type_id] for x in split_in} == {"CleanData", "LabelAgreement"}
    export = [x for x in labels_in if x.uri == rounds["export"]][0]
    assert json.loads(export.custom_properties["review_runs"].string_value) == [a]
    made_by = [e for e in store.get_events_by_artifact_ids([export.id]) if e.type == pb.Event.OUTPUT]
    [relabel] = store.get_executions_by_id([made_by[0].execution_id])
    assert [t.name for t in store.get_execution_types() if t.id == relabel.type_id] == ["dataprep.label_studio"]
    queue_events = [e for e in store.get_events_by_execution_ids([relabel.id]) if e.type == pb.Event.INPUT]
    [queue] = store.get_artifacts_by_id([queue_events[0].artifact_id])
    assert types[queue.type_id] == "ReviewQueue" and queue.properties["run_id"].string_value == a
    assert queue.uri == os.path.join(rounds["a"]["output"], "review") and queue.state == pb.Artifact.LIVE
    assert queue.properties["queued"].int_value == rounds["report_a"]["review"]["queued"]
