"""transforms/spill.py: a shuffle through files groups exactly what GroupByKey groups, batches of
several schemas and empty ones included, and moves only paths through the runner."""

import os

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.spill import GroupBySpilled, SpilledUntil, read_spilled


def _elements():
    """(key, batch): two schemas under key "a", an empty batch with no columns under "c"."""
    ints = pa.table({"x": list(range(30)), "s": [f"v{i}" for i in range(30)]}).to_batches(max_chunksize=4)
    other = pa.table({"y": [1.5, 2.5]}).to_batches()
    nothing = pa.RecordBatch.from_arrays([], names=[])
    return ([(("a" if i % 2 else "b"), b) for i, b in enumerate(ints)] + [("a", other[0])]
            + [("c", nothing)])


def _canonical(element):
    """A group as a sorted list of (schema, rows), independent of the order of the batches."""
    key, batches = element
    return key, sorted((str(b.schema), tuple(map(tuple, b.to_pydict().items()))) for b in batches)


def test_groups_are_groupbykeys_whatever_the_bundles(tmp_path):
    spill = tmp_path / "spill"
    want = sorted(_canonical(g) for g in _grouped(_elements()).items())
    for directory in (None, str(spill)):
        with TestPipeline() as p:
            got = (p | beam.Create(_elements(), reshuffle=False)
                   | GroupBySpilled(directory)
                   | beam.Map(_canonical))
            assert_that(got, equal_to(want))
    files = os.listdir(spill)
    assert files and all(f.endswith(".arrow") for f in files)
    # one file per key and schema of a bundle: everything in a file belongs to one key
    rows = sorted(b.num_rows for f in files for b in read_spilled(str(spill / f)))
    assert sum(rows) == 30 + 2


def test_at_most_max_open_files_and_the_same_groups(tmp_path, monkeypatch):
    """With room for one open file, every change of key (or of schema) closes a file: more files,
    the same groups, and never two files open at once."""
    from transforms import spill as spill_module

    open_now, most = [0], [0]
    real_init, real_close = spill_module._SpillWriter.__init__, spill_module._SpillWriter.close

    def counting_init(self, *args):
        real_init(self, *args)
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])

    def counting_close(self):
        open_now[0] -= 1
        return real_close(self)

    monkeypatch.setattr(spill_module._SpillWriter, "__init__", counting_init)
    monkeypatch.setattr(spill_module._SpillWriter, "close", counting_close)
    want = sorted(_canonical(g) for g in _grouped(_elements()).items())
    with TestPipeline() as p:
        got = (p | beam.Create(_elements(), reshuffle=False)
               | GroupBySpilled(str(tmp_path / "s"), max_open=1)
               | beam.Map(_canonical))
        assert_that(got, equal_to(want))
    assert most[0] == 1 and open_now[0] == 0
    assert len(os.listdir(tmp_path / "s")) > 4     # keys alternate, so files were closed and reopened


def test_the_runner_moves_paths_not_rows(tmp_path):
    """What crosses the GroupByKey is (key, path), a few bytes, not the batches."""
    with TestPipeline() as p:
        grouped = p | beam.Create(_elements(), reshuffle=False) | GroupBySpilled(str(tmp_path / "s"))
        shuffled = grouped.producer.inputs[0].producer.inputs[0]     # GroupPaths' input
        assert_that(shuffled | beam.Map(lambda kv: (kv[0], os.path.isfile(kv[1]) and kv[1].endswith(".arrow"))),
                    equal_to([("a", True), ("a", True), ("b", True), ("c", True)]))


def _grouped(elements):
    out = {}
    for k, b in elements:
        out.setdefault(k, []).append(b)
    return out


def _rows(batches):
    return sorted((str(b.schema), tuple(map(tuple, b.to_pydict().items()))) for b in batches)


def test_spilled_until_gives_back_every_batch_whatever_the_file_size(tmp_path):
    """Two schemas and an empty batch, files rolled after every batch (1 byte) or never: the same
    batches come back, each file holds one schema, and without a directory nothing is written."""
    batches = [b for _, b in _elements()]
    want = _rows(batches)
    for directory, file_bytes in ((str(tmp_path / "one"), 1), (str(tmp_path / "big"), 1 << 30), (None, 1)):
        with TestPipeline() as p:
            rows = p | "Rows" >> beam.Create(batches, reshuffle=False).with_output_types(pa.RecordBatch)
            gate = rows | beam.combiners.Count.Globally()
            got = rows | SpilledUntil(directory, gate, file_bytes=file_bytes)
            assert_that(got | beam.combiners.ToList() | beam.Map(_rows), equal_to([want]))
    rolled = os.listdir(tmp_path / "one")
    assert len(rolled) == len(batches)          # a file per batch past 1 byte
    assert all(len({str(b.schema) for b in read_spilled(str(tmp_path / "one" / f))}) == 1 for f in rolled)
    assert len(os.listdir(tmp_path / "big")) == 3   # one bundle, three schemas in a row: a, b's, the empty one
    assert not (tmp_path / "None").exists()


def test_spilled_until_makes_the_stage_boundary_carry_paths(tmp_path):
    """The DirectRunner's fuser (Beam's own, on the pipeline proto): a consumer waiting for a side
    input computed from its input's stage starts a new stage; through `SpilledUntil` what that
    stage reads from the one before is SpillRows' output (paths), and the consumer is fused with
    the read. Without it, the stage reads the batches."""
    from apache_beam.runners.portability.fn_api_runner import translations

    def stage_inputs(spill):
        p = beam.Pipeline()
        rows = p | beam.Create([1, 2]) | "ToBatch" >> beam.Map(
            lambda i: pa.record_batch({"a": [i]})).with_output_types(pa.RecordBatch)
        gate = rows | "Count" >> beam.combiners.Count.Globally()
        waiting = rows | "Wait" >> SpilledUntil(spill, gate)
        _ = waiting | "Consumer" >> beam.Map(lambda b, n: b.num_rows, beam.pvalue.AsSingleton(gate))
        proto = p.to_runner_api()
        ids = {t.unique_name: t for t in proto.components.transforms.values()}
        _, stages = translations.create_and_optimize_stages(proto, translations.standard_optimize_phases(),
                                                            frozenset())
        consumer = next(s for s in stages if any(t.unique_name.endswith("Consumer") for t in s.transforms))
        made = {pc for t in consumer.transforms for pc in t.outputs.values()}
        side = {pc for t in consumer.transforms for tag, pc in t.inputs.items() if tag.startswith("python_side_input")}
        reads = sorted({pc for t in consumer.transforms for pc in t.inputs.values()} - made - side)
        return ids, reads, [t.unique_name for t in consumer.transforms]

    ids, reads, fused = stage_inputs(str(tmp_path / "s"))
    assert reads == list(ids["Wait/SpillRows"].outputs.values())
    assert any(name.endswith("Wait/ReadRows") or "Wait-ReadRows" in name for name in fused)
    ids, reads, _ = stage_inputs(None)
    assert reads == list(ids["ToBatch"].outputs.values())


def _fused(p):
    """The DirectRunner's fused stages of `p` (its own phases: GroupByKeys expanded, Flattens
    sunk), each as the set of its transforms' names."""
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    _, stages = FnApiRunner().create_stages(p.to_runner_api())
    return [{t.unique_name for t in s.transforms} for s in stages]


def test_a_tuple_of_inputs_is_spilled_where_each_is_made(tmp_path):
    """`GroupBySpilled` and `SpilledUntil` of a tuple: the same groups (and batches) as a Flatten
    and then the one-input form, and each input's spill runs in the stage that makes the input,
    so what is flattened (which the DirectRunner holds as one buffer) is paths, not rows."""
    elements = _elements()
    halves = (elements[::2], elements[1::2])
    want = sorted(_canonical(g) for g in _grouped(elements).items())
    for directory in (None, str(tmp_path / "g")):
        p = TestPipeline()
        keyed = tuple(p | f"Make[{i}]" >> beam.Create(h, reshuffle=False) | f"Same[{i}]" >> beam.Map(lambda kv: kv)
                      for i, h in enumerate(halves))
        assert_that(keyed | "Group" >> GroupBySpilled(directory) | beam.Map(_canonical), equal_to(want))
        if directory:
            stages = _fused(p)
            for i in range(2):
                assert any({f"Same[{i}]", f"Group/Spill[{i}]"} <= s for s in stages), i
            assert not any("Group/FlattenPaths" in n and "Spill" in n for s in stages for n in s)
        p.run().wait_until_finish()
    batches = [b for _, b in elements]
    for directory in (None, str(tmp_path / "w")):
        p = TestPipeline()
        rows = tuple(p | f"Rows[{i}]" >> beam.Create(h, reshuffle=False).with_output_types(pa.RecordBatch)
                     | f"Same[{i}]" >> beam.Map(lambda b: b).with_output_types(pa.RecordBatch)
                     for i, h in enumerate((batches[::2], batches[1::2])))
        gate = rows[0] | beam.combiners.Count.Globally()
        got = rows | "Wait" >> SpilledUntil(directory, gate)
        assert_that(got | beam.combiners.ToList() | beam.Map(_rows), equal_to([_rows(batches)]))
        if directory:
            stages = _fused(p)
            for i in range(2):
                assert any({f"Same[{i}]", f"Wait/SpillRows[{i}]"} <= s for s in stages), i
        p.run().wait_until_finish()


def test_a_files_batches_are_written_behind_in_order_and_a_failed_write_is_raised(tmp_path):
    """The writer thread keeps a file's batches in the order given, and an error of a write
    (here a batch of another schema) is raised in the DoFn's thread, by close()."""
    from transforms.batches import OrderedThreadPool
    from transforms.spill import _SpillWriter

    io = OrderedThreadPool(width=1)
    schema = pa.schema([("i", pa.int64())])
    w = _SpillWriter(str(tmp_path), schema, io)
    for i in range(300):
        w.write(pa.RecordBatch.from_pydict({"i": list(range(i, i + i % 7))}, schema=schema))
    path = w.close()
    got = [b.column("i").to_pylist() for b in read_spilled(path)]
    assert got == [list(range(i, i + i % 7)) for i in range(300)]
    bad = _SpillWriter(str(tmp_path), schema, io)
    bad.write(pa.RecordBatch.from_pydict({"s": ["x"]}))
    with pytest.raises(pa.ArrowInvalid):
        bad.close()
    io.close()


def _bucketed_elements():
    """`Bucketed` batches (codes 0-4, one batch tagged) and the groups they stand for, found
    here by filtering each batch for each code (not by `split_by_key`)."""
    import numpy as np
    import pyarrow.compute as pc

    from transforms.batches import Bucketed

    rng = np.random.default_rng(3)
    table = pa.table({"i": list(range(90)), "s": [f"v{i % 7}" for i in range(90)]})
    elements, want = [], {}
    for n, batch in enumerate(table.to_batches(max_chunksize=30)):
        codes, tag = rng.integers(0, 5, batch.num_rows), ("t" if n == 2 else None)
        elements.append(Bucketed(batch, codes, tag))
        for code in range(5):
            part = batch.filter(pa.array(codes == code))
            if part.num_rows:
                want.setdefault(code if tag is None else (tag, code), []).append(part)
    assert len(pc.unique(pa.array(elements[0].codes))) == 5
    return elements, sorted((_canonical(g) for g in want.items()), key=repr)


def test_bucketed_batches_group_as_their_pairs_split_on_the_writer_thread(tmp_path, monkeypatch):
    """A `Bucketed` element gives the groups of its (key, part) pairs, through files or not, with
    room for every key's file or not; through files, the split runs on the spill's writer thread."""
    import threading

    from transforms import spill as spill_module

    threads = []
    real_split = spill_module.split_by_key

    def recording_split(batch, keys):
        threads.append(threading.current_thread().name)
        return real_split(batch, keys)

    monkeypatch.setattr(spill_module, "split_by_key", recording_split)
    elements, want = _bucketed_elements()
    for directory, max_open in ((None, 128), (str(tmp_path / "s"), 128), (str(tmp_path / "one"), 2)):
        with TestPipeline() as p:
            got = (p | beam.Create(elements, reshuffle=False)
                   | GroupBySpilled(directory, max_open=max_open)
                   | beam.Map(_canonical))
            assert_that(got, equal_to(want))
    assert len(threads) == 3 and all(t.startswith("ThreadPoolExecutor") for t in threads), threads
    assert len(os.listdir(tmp_path / "one")) > len(os.listdir(tmp_path / "s"))    # files closed and reopened


def test_bucketed_coder_round_trip():
    from transforms.batches import Bucketed, BucketedCoder

    elements, _ = _bucketed_elements()
    coder = beam.coders.registry.get_coder(Bucketed)
    assert isinstance(coder, BucketedCoder)
    for e in elements:
        back = coder.decode(coder.encode(e))
        assert back.batch.equals(e.batch) and list(back.codes) == list(e.codes) and back.tag == e.tag
        assert coder.estimate_size(e) == e.batch.nbytes + e.codes.nbytes


def test_grouped_batches_are_read_once_from_their_files(tmp_path, monkeypatch):
    """Through files a group is `SpilledBatches`: the runner holds its paths, the consumer reads
    each file once, and Beam's size estimate of the group does not read the files again."""
    from transforms import spill as spill_module

    reads = []
    real_read = spill_module.read_spilled

    def counting_read(path):
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(spill_module, "read_spilled", counting_read)
    want = sorted(_canonical(g) for g in _grouped(_elements()).items())
    with TestPipeline() as p:
        grouped = p | beam.Create(_elements(), reshuffle=False) | GroupBySpilled(str(tmp_path / "s"))
        assert_that(grouped | beam.Map(lambda kv: type(kv[1]).__name__), equal_to(["SpilledBatches"] * 3),
                    label="lazy")
        assert_that(grouped | beam.Map(_canonical), equal_to(want))
    files = os.listdir(tmp_path / "s")
    assert sorted(reads) == sorted(str(tmp_path / "s" / f) for f in files)
