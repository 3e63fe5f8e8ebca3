"""The labelling loop against a real Label Studio (1.23.2, started by `scripts/label_studio.sh
start`: loopback, SQLite, a fixed token): a run of the example with a review queue →
`dataprep review push` → three reviewers, created through Label Studio's API, label every
task but one (agreeing, except that one of them says `none` where the others say
`discoloration`), plus a skipped and a two-choice annotation → `dataprep review pull` → the
next run reads the export as its second annotations source. Checked: the consensus of every
relabelled example (against pandas' majority of its labels), HLP per class (against a pandas
computation of pairwise agreement), the queue shrinking to the conflicting class, the
faults, the label history and the MLMD link from the export to the queue it answers.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import urllib.request
import uuid

import pandas as pd
import pyarrow.dataset as ds
import pytest

from pipeline.config import AnnotationsConfig
from tests.conftest import ROOT, example_config, plain_mlmd_store, run_cli

CONFLICT = "discoloration"     # the class the third reviewer does not see


def _server():
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "label_studio.sh"), "status"], capture_output=True,
                          text=True)
    assert done.returncode == 0, "Label Studio is not running: scripts/label_studio.sh start"
    facts = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return facts["LABEL_STUDIO_URL"], facts["LABEL_STUDIO_API_KEY"]


def _api(url: str, token: str, method: str, path: str, body=None):
    """A plain request to Label Studio's API (what a team's own script would do)."""
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", f"Token {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read() or b"null")


def _choice(*values):
    return [{"from_name": "label", "to_name": "item", "type": "choices", "value": {"choices": list(values)}}]


def _review(folder: str) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(folder, "review", "part-00000-of-00001.parquet"))


def _cli(args):
    """`dataprep ARGS` in-process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    from pipeline.run import run

    url, token = _server()
    os.environ["LABEL_STUDIO_API_KEY"] = token
    folder = tmp_path_factory.mktemp("loop")
    out, store = folder / "out", str(folder / "m.sqlite")
    cfg_a = example_config(folder / "data", rows=300)
    a = run(cfg_a, output=str(out), store=store)
    title = f"dataprep round trip {uuid.uuid4().hex[:8]}"
    code, text, err = _cli(["review", "push", a["run_id"], "--label-studio", url, "--project", title,
                            "--store", store])
    assert code == 0, err
    pushed = json.loads(text)
    code, text, err = _cli(["review", "push", a["output"], "--label-studio", url, "--project", title])
    assert code == 0, err
    pushed_again = json.loads(text)

    # three reviewers label the tasks through the API; the third sees `none` where the others see the conflict class
    suffix = uuid.uuid4().hex[:6]
    reviewers = [_api(url, token, "POST", "/api/users/", {"username": f"rev{i}-{suffix}", "password": "pw-" + suffix * 3,
                                                          "email": f"reviewer{i}-{suffix}@example.com"})["id"]
                 for i in (1, 2, 3)]
    project = pushed["project_id"]
    tasks = sorted(_api(url, token, "GET", f"/api/tasks/?project={project}&page_size=1000")["tasks"],
                   key=lambda t: t["id"])
    earlier = {r["example_id"]: json.loads(r["annotations"]) for r in _review(a["output"]).to_dict("records")}
    given = {}
    for task in tasks[:-1]:                        # the last task is left unlabelled: it adds nothing
        example = task["data"]["example_id"]
        counts = pd.Series(list(earlier[example].values())).value_counts()
        target = sorted(counts.index, key=lambda c: (-counts[c], c))[0]   # the first prediction of the task
        labels = [target, target, "none" if target == CONFLICT else target]
        for who, label in zip(reviewers, labels):
            _api(url, token, "POST", f"/api/tasks/{task['id']}/annotations/", {"completed_by": who,
                                                                              "result": _choice(label)})
        given[example] = dict(zip((str(r) for r in reviewers), labels))
    _api(url, token, "POST", f"/api/tasks/{tasks[0]['id']}/annotations/", {"result": _choice("none"),
                                                                          "was_cancelled": True})
    _api(url, token, "POST", f"/api/tasks/{tasks[1]['id']}/annotations/", {"result": _choice("none", "scratch")})

    export = str(folder / "round-2" / "export.json")
    code, text, err = _cli(["review", "pull", title, "--label-studio", url, "-o", export])
    assert code == 0, err
    pulled = json.loads(text)
    cfg_b = cfg_a.model_copy(deep=True)
    cfg_b.labels.annotations = [cfg_a.labels.annotations, AnnotationsConfig(path=export, format="label_studio")]
    b = run(cfg_b, output=str(out), store=store)

    def report(summary):
        with open(os.path.join(summary["output"], "report.json"), encoding="utf-8") as f:
            return json.load(f)

    facts = {"url": url, "token": token, "a": a, "b": b, "report_a": report(a), "report_b": report(b),
             "store": store, "export": export, "pushed": pushed, "pushed_again": pushed_again, "pulled": pulled,
             "tasks": tasks, "given": given, "earlier": earlier, "reviewers": reviewers, "title": title}
    print("label studio round trip:", json.dumps(_numbers(facts)))     # the numbers, in the log (pytest -s)
    yield facts
    os.environ.pop("LABEL_STUDIO_API_KEY", None)


def _hlp_per_class(report):
    return {c["class"]: c["hlp"] for c in report["labels"]["classes_by_agreement"]}


def _numbers(loop):
    ra, rb = loop["report_a"], loop["report_b"]
    return {"tasks": len(loop["tasks"]), "annotations": loop["pulled"]["annotations"],
            "hlp_per_class": {c: [_hlp_per_class(ra).get(c), _hlp_per_class(rb).get(c)] for c in _hlp_per_class(rb)},
            "hlp": [ra["labels"]["overall"]["hlp"]["value"], rb["labels"]["overall"]["hlp"]["value"]],
            "queued": [ra["review"]["queued"], rb["review"]["queued"]]}


def test_push_imports_the_queue_once_into_a_project_that_names_the_classes(loop):
    ra = loop["report_a"]
    assert ra["review"]["queued"] == sum(ra["review"]["candidates"].values()) > 10   # the whole queue, uncut
    assert loop["pushed"]["imported"] == ra["review"]["queued"] == len(loop["tasks"])
    assert loop["pushed_again"]["imported"] == 0 and loop["pushed_again"]["already_there"] == len(loop["tasks"])
    project = _api(loop["url"], loop["token"], "GET", f"/api/projects/{loop['pushed']['project_id']}/")
    assert project["title"] == loop["title"] and project["show_collab_predictions"] is False
    assert set(project["parsed_label_config"]["label"]["labels"]) == {"none", "scratch", "discoloration"}
    task = loop["tasks"][0]
    assert task["data"]["dataprep_run_id"] == loop["a"]["run_id"] and "insp-" not in json.dumps(task["data"])
    assert task["total_predictions"] >= 1


def test_the_export_is_read_as_the_second_round(loop):
    ann = loop["report_b"]["labels"]["annotations"]
    n = len(loop["given"])
    assert loop["pulled"]["tasks"] == len(loop["tasks"]) and loop["pulled"]["annotations"] == 3 * n + 2
    assert ann["rounds"]["2"] == {"labels": 3 * n, "used": 3 * n}
    assert ann["label_studio"] == {"tasks": len(loop["tasks"]), "annotations": 3 * n + 2, "cancelled": 1,
                                   "unannotated_tasks": 1}
    assert ann["fault_reasons"]["annotation_several_choices"] == 1


def _consensus(labels):
    counts = pd.Series(labels).value_counts()
    return counts.index[0] if (counts == counts.iloc[0]).sum() == 1 else None


def test_consensus_of_every_relabelled_example(loop):
    raw = ds.dataset(os.path.join(loop["b"]["output"], "raw")).to_table().to_pandas().set_index("example_id")
    queued_b = _review(loop["b"]["output"]).set_index("example_id")
    for example, reviewers in loop["given"].items():
        labels = list(loop["earlier"][example].values()) + list(reviewers.values())
        expected = _consensus(labels)
        if expected is None:
            assert example not in raw.index and queued_b.loc[example, "review_reason"] == "tie"
        else:
            assert raw.loc[example, "defect"] == expected, example
            assert raw.loc[example, "label_count"] == len(labels)
            assert json.loads(raw.loc[example, "annotations"]) == {**loop["earlier"][example], **reviewers}


def test_hlp_per_class_is_that_of_the_labels_of_both_rounds(loop):
    """Per class of the consensus: the mean share of agreeing annotator pairs over its items
    with two labels or more, computed with pandas from the raw splits of the second run; an
    item of two labels is left out, as the report leaves it out (with majority and ties
    quarantined, two labels in a split agree by construction: `agreement_certain`)."""
    raw = ds.dataset(os.path.join(loop["b"]["output"], "raw")).to_table().to_pandas()
    share = []
    for _, row in raw.iterrows():
        labels = list(json.loads(row["annotations"]).values())
        pairs = list(itertools.combinations(labels, 2))
        if len(labels) > 2:
            share.append((row["defect"], sum(x == y for x, y in pairs) / len(pairs)))
    expected = pd.DataFrame(share, columns=["cls", "agree"]).groupby("cls")["agree"].mean()
    after, before = _hlp_per_class(loop["report_b"]), _hlp_per_class(loop["report_a"])
    for cls, value in expected.items():
        assert abs(after[cls] - value) < 1e-9, cls
    assert after["none"] > before["none"] and after["scratch"] > before["scratch"]
    assert after[CONFLICT] < before[CONFLICT]       # the reviewers disagree on it: its agreement falls
    overall = [r["labels"]["overall"]["hlp"]["value"] for r in (loop["report_a"], loop["report_b"])]
    assert overall[1] > overall[0]


def test_the_queue_shrinks_to_the_conflicting_class(loop):
    queue_a, queue_b = set(_review(loop["a"]["output"])["example_id"]), set(_review(loop["b"]["output"])["example_id"])
    targets = {e: sorted(set(r.values()), key=list(r.values()).count)[-1] for e, r in loop["given"].items()}
    unlabelled = loop["tasks"][-1]["data"]["example_id"]
    assert queue_b < queue_a and len(queue_b) < len(queue_a)
    assert queue_b == {e for e, t in targets.items() if t == CONFLICT} | {unlabelled}


def test_label_history_and_the_link_to_the_queue(loop, capsys):
    from ml_metadata.proto import metadata_store_pb2 as pb

    example = next(e for e, r in loop["given"].items() if CONFLICT in r.values())
    code, text, err = run_cli(["lineage", "--example", example, "--store", loop["store"], "--format", "json"], capsys)
    assert code == 0, err
    h = json.loads(text)["label_history"]
    round2 = [(e["annotator"], e["label"]) for e in h["labels"] if e["round"] == 2]
    assert sorted(round2) == sorted(loop["given"][example].items())
    assert {e["source"] for e in h["labels"] if e["round"] == 2} == {loop["export"]}
    assert {(e["annotator"], e["label"]) for e in h["labels"] if e["round"] == 1} == \
        set(loop["earlier"][example].items())
    assert [r["run_id"] for r in h["runs"]] == [loop["a"]["run_id"], loop["b"]["run_id"]]
    assert h["runs"][0]["queued"] is not None
    store = plain_mlmd_store(loop["store"])
    [export] = [x for x in store.get_artifacts_by_uri(loop["export"])]
    made = [e for e in store.get_events_by_artifact_ids([export.id]) if e.type == pb.Event.OUTPUT]
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([made[0].execution_id])
              if e.type == pb.Event.INPUT]
    [queue] = store.get_artifacts_by_id(inputs)
    assert queue.uri == os.path.join(loop["a"]["output"], "review")


def test_a_refused_token_and_an_unknown_project_are_one_line(loop, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WRONG_TOKEN", "0" * 40)
    code, _, err = run_cli(["review", "pull", loop["title"], "--label-studio", loop["url"], "-o",
                            str(tmp_path / "x.json"), "--token-env", "WRONG_TOKEN"], capsys)
    assert code == 2 and err.count("\n") == 1 and "refused the token (401" in err
    code, _, err = run_cli(["review", "pull", "no such project here", "--label-studio", loop["url"], "-o",
                            str(tmp_path / "x.json")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no project titled 'no such project here'" in err
    code, _, err = run_cli(["review", "pull", "987654", "--label-studio", loop["url"], "-o",
                            str(tmp_path / "x.json")], capsys)
    assert code == 2 and "has no project 987654" in err
    assert not os.path.exists(tmp_path / "x.json")


def test_a_personal_access_token_works_too(loop, capsys, tmp_path, monkeypatch):
    """Label Studio's default token kind (a JWT refresh token): exchanged for an access token."""
    import urllib.error

    try:
        pat = _api(loop["url"], loop["token"], "POST", "/api/token/", {})["token"]
    except urllib.error.HTTPError as e:   # 409: one per user; the integration run's server is a fresh one
        pytest.fail(f"could not create a personal access token ({e.code}): use a fresh server "
                    "(scripts/label_studio.sh stop && scripts/label_studio.sh start)")
    monkeypatch.setenv("LS_PAT", pat)
    code, text, err = run_cli(["review", "pull", str(loop["pushed"]["project_id"]), "--label-studio", loop["url"],
                               "-o", str(tmp_path / "pat.json"), "--token-env", "LS_PAT"], capsys)
    assert code == 0, err
    assert json.loads(text)["annotations"] == loop["pulled"]["annotations"]
    monkeypatch.setenv("LS_PAT", pat[:-4] + "AAAA")     # a signature that does not match
    code, _, err = run_cli(["review", "pull", str(loop["pushed"]["project_id"]), "--label-studio", loop["url"],
                            "-o", str(tmp_path / "bad.json"), "--token-env", "LS_PAT"], capsys)
    assert code == 2 and "refused the token" in err and not os.path.exists(tmp_path / "bad.json")
