"""Moving record batches between stages as file paths instead of rows.

`GroupBySpilled(directory)` is `GroupByKey` for (key, record batch) elements: each bundle
writes the batches of each key into one Arrow IPC file (lz4-compressed, `SPILL_IPC_OPTIONS`) under
`directory`, and only (key, path) goes through the runner's shuffle; after it, the files of a
key are read back as its batches. With `directory=None` it is a plain `GroupByKey`.

Why: a runner holds a shuffle's input. The DirectRunner keeps every grouped element in memory
until the group is read, so the write (every output row) and deduplication (every clean row)
each held the whole data set; on Flink every byte also crossed the gRPC data plane twice, whose
Java side buffers a bundle's output on the heap (bench/RESULTS.md). With paths, the memory a
stage needs is one group, whatever the size of the data.

`SpilledUntil(directory, gate)` does the same for a stage boundary that is not a shuffle: a
consumer that waits for a side input computed from its own input's stage (the split's
assignment waits for the thresholds; TFT's transform for the analysis) cannot be fused with
it, so its whole input crosses the boundary: the DirectRunner holds it, and Flink writes it to
disk once per consuming stage (all outputs of a fused stage form one union partition, and each
consumer gets its own copy). Through `SpilledUntil`, only the paths cross: the producer
writes files, and a reader that waits for `gate` too starts the consumer's stage.

Both take a tuple of PCollections as well, for inputs made in several stages: a Flatten is
a boundary the DirectRunner fills as one in-memory buffer before its consumer's stage starts,
so each input is spilled where it is made and only the paths are flattened (the writes get
every split this way, TFT's transform its three splits).

The files stay until the run's temporary folder is removed, so a retried bundle reads them
again; a bundle that fails leaves files no path points to, removed with that folder.
`directory` must be on a filesystem every worker sees (as the outputs are).
"""

import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders.observable import ObservableMixin
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from transforms.batches import Bucketed, OrderedThreadPool, naming, split_by_key

@dataclass(frozen=True)
class Shuffle:
    """How a job's shuffles of rows move record batches: decided once per runner
    (`runners/profile.py`) and handed to every stage that shuffles rows.

    `spill`: a folder every worker sees; the shuffles of rows move paths of Arrow files there
    (`GroupBySpilled`, `CoGroupBySpilled`, `SpilledUntil`), or, with None, batches through the
    runner's own shuffle (Dataflow's shuffle service). `buckets`: the hash buckets of the keyed
    shuffles. `max_batch_bytes`: the largest record batch a stage should hand to the next
    (None: as made; a runner with a data plane between stages wants them small)."""

    spill: Optional[str] = None
    buckets: int = 16
    max_batch_bytes: Optional[int] = None


KeyedBatch = Tuple[Any, pa.RecordBatch]
ToGroup = Union[KeyedBatch, Bucketed]       # what `GroupBySpilled` groups
KeyedPath = Tuple[Any, str]
GroupedBatches = Tuple[Any, Iterable[pa.RecordBatch]]


# A spill file is written once and read once, by the next stage. lz4 on one thread: at 65k Adult
# rows a batch is written in 12 ms and read in 4 ms (zstd, the coder's: 16 and 8 ms, and for a
# batch of 40 rows 330 µs against lz4's 19 µs, Arrow starting a zstd context per buffer), for
# 1.6× zstd's bytes; uncompressed files would be 4× them, too many for the disk at 60M rows.
SPILL_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4_frame", use_threads=False)


def _is_local(path: str) -> bool:
    return "://" not in path


class _SpillWriter:
    """One IPC file of one key's batches of one schema. Its batches are compressed and written
    on the bundle's writer thread (`io`, shared by the bundle's files and taking them in
    order): lz4 and the file write release the GIL, so the stage works on its next batch
    meanwhile, on the core the DirectRunner leaves free. An error of a write is raised by a
    later `write` or by `close`."""

    def __init__(self, directory: str, schema: pa.Schema, io: OrderedThreadPool):
        self.schema = schema
        self._io = io
        self.path = FileSystems.join(directory, f"{uuid.uuid4().hex}.arrow")
        with naming(self.path):
            if _is_local(self.path):
                self._file = None
                self._sink = pa.OSFile(self.path, "wb")
            else:
                self._file = FileSystems.create(self.path)
                self._sink = pa.PythonFile(self._file, mode="w")
            self._writer = pa.ipc.new_file(self._sink, schema, options=SPILL_IPC_OPTIONS)

    def write(self, batch: pa.RecordBatch) -> None:
        self._io.submit(self.write_here, batch)

    def write_here(self, batch: pa.RecordBatch) -> None:
        """Writes on the calling thread: for a job already running on the writer thread."""
        with naming(self.path):
            self._writer.write_batch(batch)

    def close(self) -> str:
        self._io.finish()           # this file's batches written (and every earlier one)
        with naming(self.path):
            self._writer.close()
            self._sink.close()
            if self._file is not None:
                self._file.close()
        return self.path


class _SpillingFn(beam.DoFn):
    """A DoFn writing spill files under `directory`: makes the folder, and after a failed bundle
    closes what `_open_writers` says is still open (the files are left to the folder)."""

    def __init__(self, directory: str):
        self._directory = directory

    def setup(self):
        if _is_local(self._directory):      # object stores have no folders to make
            os.makedirs(self._directory, exist_ok=True)

    def start_bundle(self):
        self._io = OrderedThreadPool(width=1)    # the bundle's writer thread (`_SpillWriter`)

    def _open_writers(self) -> Iterable[_SpillWriter]:
        raise NotImplementedError

    def teardown(self):
        for w in self._open_writers():
            try:
                w.close()
            except (OSError, pa.ArrowException):
                pass
        io = getattr(self, "_io", None)
        if io is not None:
            io.close()


class _SpillFn(_SpillingFn):
    """(key, batch) → (key, path) at the end of the bundle, one file per key (and schema).

    At most `max_open` files are open at once (a shuffle has one key per hash bucket, and
    buckets grow with the input): past that the least recently written key's file is closed,
    and that key's next batch starts a new file (a key may have several)."""

    def __init__(self, directory: str, max_open: int = 128):
        super().__init__(directory)
        self._max_open = max(1, max_open)

    def start_bundle(self):
        super().start_bundle()
        self._open: "OrderedDict[object, List[_SpillWriter]]" = OrderedDict()
        self._open_count = 0
        self._done: List[KeyedPath] = []

    def process(self, element: ToGroup):
        if not (isinstance(element, Bucketed) and self._split_on_thread(element)):
            for key, batch in _pairs(element):
                self._writer(key, batch.schema).write(batch)
        yield from ()               # outputs come at the end of the bundle (a generator: Beam warns otherwise)

    def _split_on_thread(self, element: Bucketed) -> bool:
        """The batch split by key on the writer thread, into the files of its keys (opened here,
        and none closed before the split is written: `close` waits for the thread). False, and
        nothing done, when it has more keys than files may be open at once."""
        codes = element.distinct()
        if len(codes) > self._max_open:
            return False
        if len(codes):
            writers = {int(code): self._writer(element.key(int(code)), element.batch.schema) for code in codes}
            self._io.submit(_write_parts, element, writers)
        return True

    def _writer(self, key, schema: pa.Schema) -> _SpillWriter:
        """The open file of `key` and `schema`, or a new one (closing the oldest past `max_open`)."""
        for w in self._open.get(key, ()):
            if w.schema.equals(schema, check_metadata=True):
                self._open.move_to_end(key)
                return w
        while self._open_count >= self._max_open:
            self._close_oldest()
        w = _SpillWriter(self._directory, schema, self._io)
        self._open.setdefault(key, []).append(w)
        self._open.move_to_end(key)
        self._open_count += 1
        return w

    def _close_oldest(self) -> None:
        key, writers = self._open.popitem(last=False)
        self._done += [(key, w.close()) for w in writers]
        self._open_count -= len(writers)

    def finish_bundle(self):
        while self._open:
            self._close_oldest()
        for key_path in self._done:
            yield GlobalWindows.windowed_value(key_path)
        self._done = []

    def _open_writers(self) -> Iterable[_SpillWriter]:
        return [w for writers in getattr(self, "_open", {}).values() for w in writers]


def _write_parts(element: Bucketed, writers) -> None:
    for code, part in split_by_key(element.batch, element.codes):
        writers[code].write_here(part)


def _pairs(element: ToGroup) -> Iterable[KeyedBatch]:
    return element.pairs() if isinstance(element, Bucketed) else [element]


def read_spilled(path: str) -> List[pa.RecordBatch]:
    """The batches of one spill file, in the order they were written."""
    if _is_local(path):
        reader = pa.ipc.open_file(pa.memory_map(path, "r"))
    else:
        with FileSystems.open(path) as f:
            reader = pa.ipc.open_file(pa.py_buffer(f.read()))
    return [reader.get_batch(i) for i in range(reader.num_record_batches)]


class SpilledBatches(ObservableMixin):
    """A key's batches, read from their files each time they are iterated. What the runner
    holds for a group is its paths: the batches live only as long as the consumer keeps them
    (a list of them held by the runner for the whole `process` call kept a shard's rows alive
    beside their sorted copy and the shard being written). Beam's size estimate counts the
    batches as the consumer reads them (an observable iterable, as Beam's own lazy groups are),
    without reading the files again."""

    def __init__(self, paths: Iterable[str]):
        super().__init__()
        self.paths = list(paths)

    def __iter__(self):
        for path in self.paths:
            for batch in read_spilled(path):
                self.notify_observers(batch, is_encoded=False)
                yield batch


def _read_group(element: Tuple[Any, Iterable[str]]) -> Tuple[Any, SpilledBatches]:
    key, paths = element
    return key, SpilledBatches(paths)


class _SpillRowsFn(_SpillingFn):
    """batches → paths of IPC files, a new file past `file_bytes` of batches (and per schema)."""

    def __init__(self, directory: str, file_bytes: int):
        super().__init__(directory)
        self._file_bytes = file_bytes

    def start_bundle(self):
        super().start_bundle()
        self._writer: Optional[_SpillWriter] = None
        self._bytes = 0

    def process(self, batch: pa.RecordBatch):
        if self._writer is not None and not self._writer.schema.equals(batch.schema, check_metadata=True):
            yield self._writer.close()
            self._writer = None
        if self._writer is None:
            self._writer, self._bytes = _SpillWriter(self._directory, batch.schema, self._io), 0
        self._writer.write(batch)
        self._bytes += batch.nbytes
        if self._bytes >= self._file_bytes:
            yield self._writer.close()
            self._writer = None

    def finish_bundle(self):
        if self._writer is not None:
            yield GlobalWindows.windowed_value(self._writer.close())
            self._writer = None

    def _open_writers(self) -> Iterable[_SpillWriter]:
        writer = getattr(self, "_writer", None)
        return [] if writer is None else [writer]


def _read_after(path: str, gate) -> Iterable[pa.RecordBatch]:
    del gate                # only waited for
    return read_spilled(path)


def _spill_each(inputs, label: str, spill: Callable[[], beam.ParDo]) -> beam.PCollection:
    """`inputs` (a PCollection, or a tuple of them) through `spill()`: each input through its
    own copy, in the stage that makes it, and only the paths flattened."""
    if not isinstance(inputs, tuple):
        return inputs | label >> spill()
    return [pcoll | f"{label}[{i}]" >> spill() for i, pcoll in enumerate(inputs)] | "FlattenPaths" >> beam.Flatten()


@beam.typehints.with_output_types(pa.RecordBatch)
class SpilledUntil(beam.PTransform):   # input: record batches, or a tuple of such PCollections
    """batches → the same batches (in files of ~`file_bytes` each, in order within a file), read
    back once `gate` (a PCollection, used as a side input and otherwise ignored) is ready; or
    the batches unchanged when `directory` is None.

    Applied to a tuple of PCollections, it returns one PCollection of all their batches: each
    input is spilled in its own producing stage and only the paths are flattened (a runner
    holds a Flatten's inputs as one buffer, so flattening the rows first would hold them all)."""

    def __init__(self, directory: Optional[str], gate: beam.PCollection, file_bytes: int = 64 << 20):
        super().__init__()
        self._directory = directory
        self._gate = gate
        self._file_bytes = file_bytes

    def expand(self, batches):
        if self._directory is None:   # (Beam finds the PCollections of a tuple, not of a list)
            return batches | "Flatten" >> beam.Flatten() if isinstance(batches, tuple) else batches
        return (_spill_each(batches, "SpillRows", self._spill)
                | "ReadRows" >> beam.FlatMap(_read_after, beam.pvalue.AsIter(self._gate))
                .with_output_types(pa.RecordBatch))

    def _spill(self) -> beam.ParDo:
        return (beam.ParDo(_SpillRowsFn(self._directory, self._file_bytes))
                .with_input_types(pa.RecordBatch).with_output_types(str))


@beam.typehints.with_output_types(GroupedBatches)
class GroupBySpilled(beam.PTransform):   # input: (key, record batch) or Bucketed, or a tuple of such PCollections
    """(key, record batch) → (key, iterable of record batches): `GroupByKey` through files in
    `directory` (or a plain `GroupByKey` when `directory` is None). The batches of a key come in
    no particular order, as from `GroupByKey`; through files they are read as they are iterated
    (`SpilledBatches`). A `Bucketed` element stands for its `pairs()`, split on the spill's
    writer thread.

    Applied to a tuple of PCollections, it groups them all: each is spilled in its own
    producing stage and only the (key, path) pairs are flattened (as in `SpilledUntil`)."""

    def __init__(self, directory: Optional[str], max_open: int = 128):
        super().__init__()
        self._directory = directory
        self._max_open = max_open

    def expand(self, keyed):
        if self._directory is None:
            if isinstance(keyed, tuple):
                keyed = keyed | "Flatten" >> beam.Flatten()
            return (keyed
                    | "Pairs" >> beam.FlatMap(_pairs).with_input_types(ToGroup).with_output_types(KeyedBatch)
                    | "GroupByKey" >> beam.GroupByKey())
        return (_spill_each(keyed, "Spill", self._spill)
                | "GroupPaths" >> beam.GroupByKey()
                | "ReadSpilled" >> beam.Map(_read_group).with_output_types(GroupedBatches))

    def _spill(self) -> beam.ParDo:
        return (beam.ParDo(_SpillFn(self._directory, self._max_open))
                .with_input_types(ToGroup).with_output_types(KeyedPath))


_TAG = b"dataprep.cogroup.tag"


def _tag(element: KeyedBatch, tag: str) -> KeyedBatch:
    key, batch = element
    meta = dict(batch.schema.metadata or {})
    meta[_TAG] = tag.encode()
    return key, batch.replace_schema_metadata(meta)


def _untag(element: GroupedBatches, tags: Tuple[str, ...]) -> Tuple[Any, Dict[str, List[pa.RecordBatch]]]:
    key, batches = element
    out: Dict[str, List[pa.RecordBatch]] = {t: [] for t in tags}
    for batch in batches:
        meta = dict(batch.schema.metadata or {})
        tag = meta.pop(_TAG).decode()
        out[tag].append(batch.replace_schema_metadata(meta or None))
    return key, out


class CoGroupBySpilled(beam.PTransform):   # input: {tag: PCollection of (key, record batch), or a tuple of them}
    """{tag: (key, record batch)} → (key, {tag: [record batches]}): `CoGroupByKey` for record
    batches, through files in `directory` as `GroupBySpilled` (or the runner's own shuffle when
    `directory` is None). A batch carries its tag in its schema's metadata across the shuffle;
    the batches come back without it. A tag may have a tuple of PCollections: each is spilled
    in the stage that makes it (never flattened first, which the DirectRunner holds in memory)."""

    def __init__(self, directory: Optional[str], max_open: int = 128):
        super().__init__()
        self._directory = directory
        self._max_open = max_open

    def expand(self, pcolls):
        tags = tuple(sorted(pcolls))
        tagged = tuple(pcoll | f"Tag[{t}][{i}]" >> beam.Map(_tag, t).with_output_types(KeyedBatch)
                       for t in tags
                       for i, pcoll in enumerate(pcolls[t] if isinstance(pcolls[t], tuple) else (pcolls[t],)))
        return (tagged
                | "Group" >> GroupBySpilled(self._directory, self._max_open)
                | "Untag" >> beam.Map(_untag, tags))
