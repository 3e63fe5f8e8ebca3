"""What the analysis found, read back from a saved transform graph (for report.json)."""

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from transforms.features.adapter import output_types
from transforms.features.library import FILL_VOCABULARY_PREFIX, STAT_PREFIX, FeatureSpec


def summarize_transform(output_dir: str, specs: Optional[Sequence[FeatureSpec]] = None) -> Dict[str, Any]:
    """What the analysis found, read back from the saved transform graph under `output_dir`.

    Returns `{"columns": {column: {...}}, "vocabularies": {name: size}, "vocabulary_heads": {name: [first
    entries]}, "outputs": {name: type}}`:
    per column the statistics named with `report_stat` (mean, std, min, max, boundaries,
    fill) and, given the declarative `specs`, its transform, outputs and vocabulary size.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(output_dir)
    feature_spec = tft_output.transformed_feature_spec()
    outputs = {name: _type_name(t) for name, t in output_types(feature_spec).items()}
    for name in feature_spec:
        outputs.setdefault(name, type(feature_spec[name]).__name__)
    assets = tf.io.gfile.join(tft_output.transform_savedmodel_dir, "assets")
    vocabularies, heads = {}, {}
    for name in sorted(tf.io.gfile.listdir(assets)) if tf.io.gfile.exists(assets) else []:
        if not name.startswith(FILL_VOCABULARY_PREFIX):   # those hold one value: the fill, reported as such
            vocabularies[name] = int(tft_output.vocabulary_size_by_name(name))
            heads[name] = _vocabulary_head(tf.io.gfile.join(assets, name), VOCABULARY_HEAD)
    columns: Dict[str, Dict[str, Any]] = {}
    for spec in specs or ():
        entry = columns.setdefault(spec.column, {})
        entry.update(transform=spec.kind, outputs=list(spec.output_names))
        if spec.kind in ("vocabulary", "tokens_vocabulary", "tfidf") and tft_output.vocabulary_file_by_name(
                spec.tf_name):
            entry["vocabulary_size"] = int(tft_output.vocabulary_size_by_name(spec.tf_name))
            entry["oov_buckets"] = 1 if spec.kind == "tfidf" else spec.num_oov_buckets
    for (column, stat), value in sorted(read_stats(tft_output.transform_savedmodel_dir).items()):
        columns.setdefault(column, {})[stat] = value
    return {"columns": columns, "vocabularies": vocabularies, "vocabulary_heads": heads, "outputs": outputs}


VOCABULARY_HEAD = 10    # entries of each vocabulary shown in the report


def _vocabulary_head(path: str, n: int) -> List[str]:
    """The first `n` entries of a vocabulary file (the most frequent), as text."""
    import tensorflow as tf

    out: List[str] = []
    with tf.io.gfile.GFile(path, "rb") as f:
        for line in f:
            if len(out) >= n:
                break
            out.append(line.rstrip(b"\n").decode("utf-8", "replace"))
    return out


def _type_name(t: Optional[pa.DataType]) -> str:
    """`int64`, `float32`, `string`, `list<int64>`, ...; `other` for sparse or ragged outputs."""
    if t is None:
        return "other"
    if pa.types.is_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return {pa.binary(): "string", pa.float32(): "float32"}.get(t, str(t))


_STAT_OP = re.compile(r"(?:^|/)" + STAT_PREFIX + r"\.([0-9a-f]*)\.([A-Za-z][A-Za-z_]*)$")


def read_stats(transform_savedmodel_dir: str) -> Dict[Tuple[str, str], Any]:
    """{(column, stat): value} for every tensor named by `report_stat` in a saved transform graph.

    The analyser results are constants in the graph (TF1, `force_tf_compat_v1`) or captured
    by the saved function (TF2); the named tensors are evaluated from them alone (a stat that
    needs input data is skipped).
    """
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    saved = loader_impl.parse_saved_model(transform_savedmodel_dir)
    if [list(m.meta_info_def.tags) for m in saved.meta_graphs] == [["transform"]]:    # the TF1 graph TFT writes
        return _tf1_stats(saved.meta_graphs[0].graph_def, transform_savedmodel_dir)
    loaded = tf.saved_model.load(transform_savedmodel_dir)
    fn = loaded.transform_fn
    if hasattr(fn, "concrete_functions"):
        fn = fn.concrete_functions[0]
    graph = fn.graph
    if not any(_STAT_OP.search(op.name) for op in graph.get_operations()):
        return {}
    constants = {}
    for external, internal in graph.captures:
        if external.dtype != tf.resource and hasattr(external, "numpy"):
            constants[internal.name] = external.numpy()
    with tf.Graph().as_default() as g:
        input_map = {name: tf.constant(value) for name, value in constants.items()}
        tf.compat.v1.import_graph_def(graph.as_graph_def(), input_map=input_map, name="")
        with tf.compat.v1.Session(graph=g) as session:
            return _evaluate_stats(session, [op.name for op in g.get_operations() if _STAT_OP.search(op.name)])[0]


def _tf1_stats(graph_def, transform_savedmodel_dir: str) -> Dict[Tuple[str, str], Any]:
    """The stats of TFT's TF1 transform graph, from the part of the graph they depend on.

    Loading the whole SavedModel (every op, the vocabulary tables initialised) and running
    each stat on its own cost 0.3 s of a 10k-row run's fixed cost; the stats' own subgraph
    is a few constants and arithmetic. A stat that fails there, for a reason other than
    needing the input data (a placeholder), is evaluated in the loaded SavedModel as before.
    """
    import tensorflow as tf

    names = [node.name for node in graph_def.node if _STAT_OP.search(node.name)]
    if not names:
        return {}
    data = _data_dependent(graph_def, names)
    names = [n for n in names if n not in data]
    if not names:
        return {}
    subgraph = tf.compat.v1.graph_util.extract_sub_graph(graph_def, names)
    with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as session:
        tf.compat.v1.import_graph_def(subgraph, name="")
        out, failed = _evaluate_stats(session, names)
    if failed:   # e.g. a stat of a lookup in a vocabulary table, which the SavedModel's init op fills
        with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as session:
            tf.compat.v1.saved_model.loader.load(session, ["transform"], transform_savedmodel_dir)
            out.update(_evaluate_stats(session, failed)[0])
    return out


def _data_dependent(graph_def, names: Sequence[str]) -> set:
    """The nodes of `names` that depend on a placeholder (the input data) in `graph_def`: those
    reached from a placeholder along the graph's edges (a walk that a while loop's cycle ends)."""
    consumers: Dict[str, List[str]] = {}
    for node in graph_def.node:
        for i in node.input:
            consumers.setdefault(i.lstrip("^").split(":")[0], []).append(node.name)
    reached = {node.name for node in graph_def.node if node.op.startswith("Placeholder")}
    frontier = list(reached)
    while frontier:
        for consumer in consumers.get(frontier.pop(), ()):
            if consumer not in reached:
                reached.add(consumer)
                frontier.append(consumer)
    return reached.intersection(names)


def _evaluate_stats(session, names: Sequence[str]) -> Tuple[Dict[Tuple[str, str], Any], List[str]]:
    """({(column, stat): value} of the `report_stat` ops `names` in the session's graph, the names
    that could not be evaluated): all in one run, one by one if that fails."""
    import tensorflow as tf

    graph = session.graph
    tensors = [graph.get_operation_by_name(n).outputs[0] for n in names]
    try:
        values = session.run(tensors)
    except tf.errors.OpError:    # some depend on the data, not only on the analysis
        values = []
        for t in tensors:
            try:
                values.append(session.run(t))
            except tf.errors.OpError:
                values.append(_FAILED)
    out: Dict[Tuple[str, str], Any] = {}
    failed = []
    for name, value in zip(names, values):
        if value is _FAILED:
            failed.append(name)
            continue
        m = _STAT_OP.search(name)
        out[(bytes.fromhex(m.group(1)).decode(), m.group(2))] = _plain(value)
    return out, failed


_FAILED = object()


def _plain(value: Any) -> Any:
    """A numpy value → JSON-ready Python (a [1, n] boundaries array → a flat list)."""
    arr = np.asarray(value)
    if arr.dtype.kind in "SO":
        items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.reshape(-1).tolist()]
        return items[0] if arr.ndim == 0 else items
    if arr.dtype == np.float32:     # the shortest text that is still this float32: 38.664, not 38.66400146484375
        items = [float(str(v)) for v in arr.reshape(-1)]
    else:
        items = arr.reshape(-1).tolist()
    return items[0] if arr.ndim == 0 else items
