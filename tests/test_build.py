"""pipeline/build.py: the config becomes the transforms' specs, and the plan names exactly
the stages built (the launcher records those in MLMD)."""

from __future__ import annotations

import apache_beam as beam

from pipeline.build import Plan, build_pipeline, dedup_spec, feature_specs, rule_spec, validate_spec
from pipeline.config import parse_config
from pipeline.inputs import ANNOTATIONS, DATA, match_inputs
from pipeline.layout import Layout
from transforms.clean import RuleSpec
from transforms.features import FeatureSpec


def _cfg(tmp_path, **extra):
    (tmp_path / "data.csv").write_text("id,x,y,a1,a2\nk1,1,p,p,q\nk2,2,q,q,q\n")
    (tmp_path / "ann.csv").write_text("id,annotator,label\nk1,a,p\n")
    data = {"name": "t", "inputs": [{"path": str(tmp_path / "data.csv"), "format": "csv"}],
            "schema": {"id": "id", "label": "y", "columns": {"id": "string", "x": "float", "y": "string"}},
            "split": {"fractions": {"train": 0.5, "test": 0.5}}, **extra}
    return parse_config(data)


def _plan(cfg, tmp_path) -> Plan:
    return build_pipeline(beam.Pipeline(), cfg, match_inputs(cfg), Layout(str(tmp_path / "run")))


def test_plan_names_the_stages_built(tmp_path):
    plain = _plan(_cfg(tmp_path), tmp_path)
    assert plain.stages == ["ingest", "clean", "split", "write"] and plain.splits == ["train", "test"]
    assert plain.job_results.startswith(str(tmp_path / "run" / "tmp"))
    labelled = _plan(_cfg(tmp_path, labels={"annotators": ["a1", "a2"], "on_tie": "keep_first"},
                          features={"x": "zscore"}), tmp_path)
    assert labelled.stages == ["ingest", "clean", "labels", "split", "transform", "write"]


def test_input_kinds_are_explicit(tmp_path):
    cfg = _cfg(tmp_path, labels={"annotations": {"path": str(tmp_path / "ann.csv"), "id": "id"}})
    files = match_inputs(cfg)
    assert [(f.kind, f.index, f.where) for f in files] == [(DATA, 0, "inputs[0]"),
                                                           (ANNOTATIONS, 0, "labels.annotations")]
    assert _plan(cfg, tmp_path).stages == ["ingest", "clean", "labels", "split", "write"]


def test_config_models_become_frozen_specs(tmp_path):
    cfg = _cfg(tmp_path, clean={"rules": [{"column": "y", "in": ["p", "q"], "reason": "bad"}],
                                "dedup": {"keys": "all"}},
               features={"x": "bucketize:3", "y": {"transform": "vocabulary", "top_k": 5}})
    assert rule_spec(cfg.clean.rules[0]) == RuleSpec(column="y", in_=("p", "q"), reason="bad")
    assert validate_spec(cfg).rules == (RuleSpec(column="y", in_=("p", "q"), reason="bad"),)
    assert dedup_spec(cfg).keys == ("x", "y")            # "all": every read column but the id
    assert feature_specs(cfg) == [FeatureSpec(column="x", kind="bucketize", arg=3),
                                  FeatureSpec(column="y", kind="vocabulary", arg=5)]


def test_shuffle_buckets_grow_with_the_input_past_a_gigabyte():
    from runners.profile import shuffle_buckets

    assert shuffle_buckets(0) == 16 and shuffle_buckets(110 << 20) == 16
    assert shuffle_buckets((1 << 30) + 1) == 17                        # one per 64 MB, rounded up
    assert shuffle_buckets(7_564_418_569) == 113                       # the 60M-row benchmark file


def test_the_profile_spills_except_on_dataflow():
    """Rows cross the DirectRunner's and Flink's shuffles as paths of spill files; on Dataflow,
    through the service's own shuffle (files under a gs:// output would be a write and a read
    of every row more)."""
    from runners.profile import execution_profile

    assert execution_profile("DirectRunner", 10, "/out/tmp/spill").spill == "/out/tmp/spill"
    assert execution_profile("FlinkRunner", 10, "/out/tmp/spill").spill == "/out/tmp/spill"
    dataflow = execution_profile("DataflowRunner", 1 << 31, "gs://b/out/tmp/spill")
    assert dataflow.spill is None and dataflow.buckets == 32


def test_rows_are_spilled_where_they_are_made_never_after_a_flatten(tmp_path):
    """The DirectRunner holds a Flatten's inputs as one in-memory buffer: every stage that spills
    rows to files (the dedup and write shuffles, the waits for the split's thresholds and for
    TFT's analysis) must spill them in the stage that makes them, not after a Flatten of them.
    Left out: the quarantine and the duplicates, flattened from several stages for the report's
    tallies and samples as well (so held by that Flatten anyway), a small share of the rows."""
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    p = beam.Pipeline()
    build_pipeline(p, _cfg(tmp_path, labels={"annotators": ["a1", "a2"], "on_tie": "keep_first"},
                           features={"x": "zscore", "y": "vocabulary"}), match_inputs(_cfg(tmp_path)),
                   Layout(str(tmp_path / "run")))
    proto = p.to_runner_api()
    flattens = {t.unique_name for t in proto.components.transforms.values()
                if t.spec.urn == "beam:transform:flatten:v1"}
    _, stages = FnApiRunner().create_stages(proto)      # the DirectRunner's own fusion, Flattens sunk
    spilling = 0
    for stage in stages:
        names = [t.unique_name for t in stage.transforms]
        if any(n.rsplit("/", 1)[-1].split("[")[0] in ("Spill", "SpillRows") for n in names):
            spilling += 1
            held = [n for n in names if n.endswith("/Read") and n[:-len("/Read")] in flattens
                    and not n.endswith("/FlattenPaths/Read")]       # a Flatten of spill files' paths
            assert not [n for n in held if n not in ("AllQuarantine/Read", "AllDuplicates/Read")], names
    assert spilling >= 4        # dedup, the split's wait, the transform's wait, the writes
