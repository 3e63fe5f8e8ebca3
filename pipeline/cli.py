"""The `dataprep` command line (see ../shared/CONTRACT.md).

Exit status: 0 success; 2 bad config or arguments (one line naming the field); 1 the
pipeline failed (and the run is recorded as FAILED in the store); 130/143 the run was
canceled by SIGINT/SIGTERM (recorded CANCELED); 141 stdout's reader went away (`| head`).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import os
import sys
import warnings
from typing import Optional, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2   # and 128 + signal: 130 (SIGINT), 143 (SIGTERM) for a canceled run


def _quiet_libraries(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:   # a DoFn's error, logged with its traceback by Beam
        handler.setFormatter(_RedactingFormatter(handler.formatter or logging.Formatter()))
    logging.getLogger("dataprep").setLevel(logging.INFO)
    if not verbose:
        for name in ("apache_beam", "absl", "tensorflow", "tensorflow_transform", "tfx_bsl"):
            logging.getLogger(name).setLevel(logging.ERROR)
    # issue 35: a failing DoFn's error, logged by Beam with its traceback (27 lines for a full disk):
    # the run's own line says it (`run failed: ...`); --verbose shows the traceback
    for name in ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker"):
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.CRITICAL)


class _RedactingFormatter(logging.Formatter):
    """Log lines, tracebacks included, with credentials redacted (`runners.redact`)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        from runners import redact

        return redact(self._inner.format(record))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        self.exit(EXIT_USAGE, f"dataprep: error: {message}\n")


class _Version(argparse.Action):
    """`--version`: the package version and the code version a run records (git commit)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from pipeline.version import code_version, package_version

        print(f"dataprep {package_version()} (code {code_version()})", flush=True)
        parser.exit(EXIT_OK)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dataprep", description="Clean, label-check, split and transform data with Apache Beam.")
    p.add_argument("--version", action=_Version, help="print the package and code version, and exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser(
        "run", help="run a pipeline config (extra arguments go to Beam)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs the pipeline of CONFIG.yaml: ingest, clean, labels, split, transform, write; each stage "
                    "recorded in the metadata store.\n\nOptions this command does not know go to Apache Beam "
                    "untouched (--runner, --direct_num_workers, --flink_master, --project, ...).",
        epilog="example:\n  dataprep run examples/visual_inspection/config.yaml --direct_num_workers 2\n"
               "  dataprep run config.yaml --runner FlinkRunner --flink_master localhost:8081\n\n"
               "exit status: 0 success (one JSON line: run_id, rows, output, store); 2 bad config or arguments,\n"
               "  or the growth guard refused the run (guard.on_exceed: fail); 1 the pipeline failed (recorded\n"
               "  FAILED in the store).\n\n"
               "default store: metadata_store of the config, else the SQLite file metadata.sqlite under the\n"
               "  output root (output.path of the config, or --output).\n"
               "writes OUT/<run_id>/: raw/, transformed/, quarantine/, duplicates/, review/ (with labels.review),\n"
               "  annotations/ and annotation_faults/ (with labels.annotations), report.json and report.html.")
    r.add_argument("config")
    r.add_argument("--output", help="output root (default: output.path of the config)")
    r.add_argument("--store", help="metadata store: a SQLite path or mysql://user@host:port/db "
                                   "(default: metadata_store of the config, else OUTPUT/metadata.sqlite)")
    r.add_argument("--verbose", action="store_true", help="show Beam/TF logs")
    r.add_argument("--force", action="store_true", help="run even if an identical run is already in the store")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress line on stderr (by default: phase, input bytes read of the total, elapsed; "
                        "at most once a second)")

    v = sub.add_parser(
        "validate", help="check a config, and a sample of its data, without running it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Checks CONFIG.yaml (fields, columns, user code, input headers), then reads the first "
                    "--sample records of each input with the run's own reader and validation and reports: per "
                    "column the values that fail its type, missing-value markers not in na_values, in: values "
                    "that never occur (did you mean ...?), an id that repeats, the projected quarantine per "
                    "reason, and the default quality gates the run would likely fail.",
        epilog="exit status: 0 the config is valid (warnings are printed, not fatal); 2 a bad config, or a\n"
               "  warning with --strict.")
    v.add_argument("config")
    v.add_argument("--strict", action="store_true", help="exit 2 when the sample gives any warning")
    v.add_argument("--sample", type=int, default=None, metavar="N",
                   help="records read from the start of each input (default 10000; 0: the config only)")

    ini = sub.add_parser(
        "init", help="print a starter config inferred from a sample of a data file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reads the first --sample records of DATA (CSV, TSV, JSON lines or Parquet) with the run's "
                    "own reader and prints a commented config: the CSV dialect, each column's type (what the run "
                    "accepts for every sampled row), an id candidate, the label, metadata candidates, a feature "
                    "per column and a split stratified by the label.",
        epilog="example:\n  dataprep init data/penguins.csv --label species > penguins.yaml\n"
               "  dataprep init adult.data --names age,workclass,...,income --label income\n\n"
               "exit status: 0 the config is printed; 2 the file cannot be read as data (one line).")
    ini.add_argument("data", metavar="DATA", help="a data file (or a glob: its first file is sampled)")
    ini.add_argument("--label", help="the label column (default: guessed, and said so)")
    ini.add_argument("--id", help="the example id column (default: a column unique in the sample, if any)")
    ini.add_argument("--names", help="the column names of a header-less CSV, comma separated")
    ini.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from the file name")
    ini.add_argument("--sample", type=int, default=None, metavar="N",
                     help="records read from the start of the file (default 10000)")

    lin = sub.add_parser("lineage", help="where an output came from, or what an input became")
    lin.add_argument("target", nargs="?", help="an output path, a shard file, an artifact id or a run id")
    lin.add_argument("--example", help="follow one example id instead (in the latest run, or --run)")
    lin.add_argument("--run", help="with --example: the run to look in")
    lin.add_argument("--store")
    lin.add_argument("--direction", choices=["upstream", "downstream", "both"], default="upstream")
    lin.add_argument("--format", choices=["tree", "json", "dot"], default="tree")

    d = sub.add_parser("diff", help="what changed between two runs (config, inputs, counts, agreement per class, "
                                           "consensus labels, review queue, split churn)")
    d.add_argument("run_a")
    d.add_argument("run_b")
    d.add_argument("--store")
    d.add_argument("--format", choices=["text", "json"], default="text")

    rep = sub.add_parser("report", help="render report.html again from a run's report.json and the store")
    rep.add_argument("target", metavar="RUN_ID|RUN_DIR")
    rep.add_argument("--store", help="the metadata store (default: the one named in the run's report.json)")

    rv = sub.add_parser("review", help="the review queue in Label Studio: push a run's queue, pull the labels back")
    rsub = rv.add_subparsers(dest="review_command", required=True, parser_class=_Parser)
    push = rsub.add_parser(
        "push", help="import a run's review queue into a Label Studio project (created, or reused by title)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The token is read from $LABEL_STUDIO_API_KEY (or the variable --token-env names).\n"
               "exit status: 0 done (one JSON line: project_id, project, url, run_id, imported, already_there);\n"
               "  2 a bad argument (no such run or project, no review queue, the token refused);\n"
               "  1 Label Studio could not be reached or failed.")
    push.add_argument("run", metavar="RUN", help="a run id (in --store) or a run folder OUT/<run_id>")
    push.add_argument("--label-studio", required=True, metavar="URL", help="the server, e.g. http://localhost:8080")
    push.add_argument("--project", metavar="TITLE", help="the project's title (default: '<pipeline> review')")
    push.add_argument("--token-env", metavar="NAME", help="the environment variable holding the API token "
                                                          "(default LABEL_STUDIO_API_KEY)")
    push.add_argument("--store")
    pull = rsub.add_parser(
        "pull", help="write a Label Studio project's JSON export, for labels.annotations (format: label_studio)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 done (one JSON line: project_id, project, file, tasks, annotations, runs);\n"
               "  2 a bad argument (no such project, the token refused); 1 Label Studio could not be reached or "
               "failed.")
    pull.add_argument("project", metavar="PROJECT", help="the project's id or title")
    pull.add_argument("--label-studio", required=True, metavar="URL")
    pull.add_argument("-o", "--output", required=True, metavar="FILE")
    pull.add_argument("--token-env", metavar="NAME")

    runs = sub.add_parser("runs", help="list the runs in a store")
    runs.add_argument("--store")
    runs.add_argument("--format", choices=["table", "json"], default="table")
    return p


def _default_store(target: Optional[str] = None) -> str:
    """The store when --store is not given: the one named in the target run's report,
    else $DATAPREP_STORE, else ./out/metadata.sqlite."""
    if target and os.path.exists(target):
        probe = os.path.abspath(target)
        while probe != os.path.dirname(probe):
            report = os.path.join(probe, "report.json")
            if os.path.isfile(report):
                try:
                    with open(report, encoding="utf-8") as f:
                        store = json.load(f).get("store")
                    if store:
                        return store
                except (OSError, ValueError):
                    pass
            probe = os.path.dirname(probe)
    return os.environ.get("DATAPREP_STORE", os.path.join("out", "metadata.sqlite"))


def _error(e: BaseException, what: str = "error") -> None:
    """`dataprep: error: <message>` on stderr, credentials in the message (a path's
    `user:pw@`, `password=...`) redacted."""
    from runners import redact

    print(f"dataprep: {what}: {redact(str(e))}", file=sys.stderr)


def _existing_store(text: str):
    from pipeline.metadata import StoreLocation, open_store

    location = StoreLocation.parse(text)
    if location.sqlite and not os.path.exists(location.sqlite):
        raise FileNotFoundError(f"no metadata store at {location.sqlite} (use --store)")
    return open_store(location)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command != "run" and extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse's --help and usage errors, as a return code
        return int(e.code or 0)
    _quiet_libraries(getattr(args, "verbose", False))

    from runners.tuning.imports import no_full_collections

    with no_full_collections():     # pydantic, ml_metadata (runners/tuning/imports.py)
        from pipeline.config import ConfigError, load_config
        from pipeline.metadata import StoreError

    try:
        if args.command == "validate":
            cfg = load_config(args.config)
            from pipeline.config import check_user_code
            from pipeline.inputs import check_input_columns, match_inputs

            check_user_code(cfg)

            files = match_inputs(cfg)
            check_input_columns(cfg, files)
            print(f"{args.config}: ok ({len(files)} input file(s))", flush=True)
            if args.sample is not None and args.sample < 0:
                _error(ValueError(f"--sample: must be 0 or more, got {args.sample}"))
                return EXIT_USAGE
            if args.sample == 0:
                return EXIT_OK
            from pipeline.preflight import SAMPLE_ROWS, preflight

            found = preflight(cfg, files, SAMPLE_ROWS if args.sample is None else args.sample)
            print("\n".join(found.lines()), flush=True)
            if found.findings and args.strict:
                _error(ValueError(f"{len(found.findings)} warning(s) with --strict"), "error: validate")
                return EXIT_USAGE
            return EXIT_OK
        if args.command == "init":
            from pipeline.starter import StarterError, starter_config

            if args.sample is not None and args.sample < 1:
                _error(ValueError(f"--sample: must be 1 or more, got {args.sample}"))
                return EXIT_USAGE
            try:
                print(starter_config(args.data, label=args.label, id_column=args.id, fmt=args.format,
                                     names=args.names.split(",") if args.names else None,
                                     **({"sample_rows": args.sample} if args.sample else {})), end="", flush=True)
            except StarterError as e:
                _error(e)
                return EXIT_USAGE
            return EXIT_OK
        if args.command == "run":
            cfg = load_config(args.config)
            from runners.tuning.imports import lean

            with lean():    # Beam without the modules it imports only in case (runners/tuning/imports.py)
                from pipeline.run import PipelineFailure, RunCanceled, run

            try:
                summary = run(cfg, output=args.output, store=args.store, beam_args=extra, force=args.force,
                              progress=not args.no_progress)
            except PipelineFailure as e:
                _error(e, "run failed")
                return EXIT_FAILED
            except RunCanceled as e:
                print(f"dataprep: run {e.run_id} canceled by {e.signal_name}; recorded CANCELED, its files removed",
                      file=sys.stderr, flush=True)
                return 128 + e.signum
            if "reused_from" in summary:
                print(f"dataprep: identical to run {summary['reused_from']} (same config and inputs); "
                      f"not run again, use --force to run anyway", file=sys.stderr)
            print(json.dumps(summary), flush=True)
            return EXIT_OK
        if args.command == "lineage":
            from pipeline.lineage import Lineage, TargetNotFound, format_graph

            from pipeline.lineage import example_provenance

            if not args.target and not args.example:
                parser.error("lineage needs a TARGET or --example ID")
            store = _existing_store(args.store or _default_store(args.target))
            lineage = Lineage(store)
            try:
                if args.example:
                    from pipeline.label_history import format_label_history, label_history

                    history = label_history(store, args.example, args.run)   # every label it got, per run
                    try:
                        found = example_provenance(store, args.example, args.run)
                    except TargetNotFound:
                        if not history["runs"]:   # a tie, say: in no split, but it has labels
                            raise
                        found = None
                    if args.format == "json":
                        print(json.dumps(dict(found or {"example_id": args.example}, label_history=history),
                                         indent=2, default=str))
                        return EXIT_OK
                    if found is not None:
                        where = (f"quarantined: {found['reason']} (stage {found['stage']})"
                                 if found["found_in"]["type"] == "Quarantine" else f"in {found['found_in']['uri']}")
                        print(f"example {found['example_id']} (run {found['run_id']}): {where}, "
                              f"from {found['source']} line {found['row']}")
                    if history["runs"]:
                        print(format_label_history(history))
                    if found is None:
                        return EXIT_OK
                    graph = lineage.graph(store.get_artifacts_by_id([found["found_in"]["artifact_id"]]), "upstream")
                else:
                    graph = lineage.graph(lineage.resolve(args.target), args.direction)
            except TargetNotFound as e:
                _error(e)
                return EXIT_USAGE
            print(format_graph(graph, "upstream" if args.example else args.direction, args.format))
            return EXIT_OK
        if args.command == "diff":
            from pipeline.lineage import TargetNotFound, diff_runs, format_diff

            try:
                d = diff_runs(_existing_store(args.store or _default_store()), args.run_a, args.run_b)
            except TargetNotFound as e:
                _error(e)
                return EXIT_USAGE
            print(json.dumps(d, indent=2) if args.format == "json" else format_diff(d))
            return EXIT_OK
        if args.command == "report":
            from pipeline.lineage import TargetNotFound
            from pipeline.report import rerender

            try:
                print(rerender(args.target, args.store or (None if os.path.isdir(args.target)
                                                           else _default_store())))
            except TargetNotFound as e:
                _error(e)
                return EXIT_USAGE
            return EXIT_OK
        if args.command == "review":
            return _review(args)
        if args.command == "runs":
            from pipeline.lineage import format_runs, list_runs

            runs = list_runs(_existing_store(args.store or _default_store()))
            print(json.dumps(runs, indent=2) if args.format == "json" else format_runs(runs))
            return EXIT_OK
    except ConfigError as e:
        _error(e)
        return EXIT_USAGE
    except StoreError as e:
        _error(e)
        return EXIT_FAILED
    except (FileNotFoundError, ValueError) as e:
        _error(e)
        return EXIT_USAGE
    return EXIT_USAGE


def _review(args) -> int:
    """`review push` / `review pull` (pipeline/label_studio.py): one JSON line, or one error
    line with exit 2 (a bad argument) or 1 (Label Studio failed)."""
    from pipeline.label_studio import Client, LabelStudioError, find_queue, pull, push, token_from_env

    try:
        client = Client(args.label_studio, token_from_env(args.token_env))
        if args.review_command == "push":
            store = None if os.path.isdir(args.run) else _existing_store(args.store or _default_store(args.run))
            print(json.dumps(push(client, find_queue(args.run, store), args.project)), flush=True)
        else:
            print(json.dumps(pull(client, args.project, args.output)), flush=True)
    except LabelStudioError as e:
        _error(e)
        return EXIT_USAGE if e.usage else EXIT_FAILED
    except FileNotFoundError:   # no such store: a bad argument (main's handler)
        raise
    except OSError as e:        # the export could not be written
        _error(e)
        return EXIT_FAILED
    return EXIT_OK


def entry() -> None:
    """The `dataprep` command: `main()`, then exit.

    Before exiting, every object is frozen: the interpreter's last garbage collection
    would otherwise walk the millions that TensorFlow and Beam leave.
    """
    try:
        code = main()
        sys.stdout.flush()     # here, so that a reader gone (`| head`) is seen here
    except BrokenPipeError:
        # the reader of stdout went away (`dataprep lineage ... | head`): end quietly, as a
        # command killed by SIGPIPE would; stdout goes to /dev/null so the flush at exit is quiet too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(128 + 13)
    gc.freeze()
    if code > 128:   # canceled: the job's threads may still be busy in a DoFn; recorded and cleaned already
        # What a normal exit runs but the threads' joins: Beam's job server for Flink is stopped there.
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
