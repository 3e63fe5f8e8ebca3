"""Which input columns each output of a preprocessing_fn is computed from, read from the
TFT graph (for OpenLineage's column lineage of the transformed splits).

TFT traces the function into a graph where every analyzer's result (a mean, a vocabulary
file) is a placeholder, a "tensor sink", fed once the analysis has run. Two kinds of
dependency follow from it, both found with TFT's own graph analysis
(`graph_tools.get_dependent_inputs`, as `tft.get_transform_input_columns` uses it, which
also follows table initializers, so a vocabulary lookup leads to its vocabulary file):
- `direct`: the input columns whose values of the same row reach the output (the transform);
- `analyzed`: the input columns the output's analyzers read, over the whole analysis
  dataset (train): a z-score's mean and deviation, a vocabulary. An analyzer that reads
  another analyzer's result counts that one's columns too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Mapping


@dataclass(frozen=True)
class OutputSources:
    """The input columns one output depends on: row by row (`direct`) and through analyzers (`analyzed`)."""

    direct: FrozenSet[str]
    analyzed: FrozenSet[str]


def output_sources(preprocessing_fn: Callable, feature_spec: Mapping[str, object]) -> Dict[str, OutputSources]:
    """Traces `preprocessing_fn` on inputs of `feature_spec` (a TFT feature spec: column →
    `tf.io.VarLenFeature`, ...) as a TF1 graph, as TFT does, and returns for each output
    the columns it depends on. Runs no analysis and reads no data."""
    import tensorflow as tf
    from tensorflow_transform import analyzer_nodes, graph_tools, impl_helper, nodes

    graph, inputs, outputs = impl_helper.trace_preprocessing_function(preprocessing_fn, dict(feature_spec),
                                                                      use_tf_compat_v1=True)
    sinks = list(graph.get_collection(analyzer_nodes.TENSOR_REPLACEMENTS))
    sink_tensors = {f"sink:{i}": s.tensor for i, s in enumerate(sinks)}
    with graph.as_default():
        sources = {**sink_tensors, **{f"column:{c}": t for c, t in inputs.items()}}

        # TFT's analysis stops at a lookup table (it only asks whether its initializer can run),
        # so a vocabulary lookup's dependency on its vocabulary file is followed here: the tables
        # among an output's ancestors, then what their initializers read.
        initializers = [op for op in graph.get_collection(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
                        if isinstance(op, tf.Operation) and len(op.inputs) > 1]

        def depends_on(tensors, seen_tables: FrozenSet[str] = frozenset()):
            """(columns, sink indices) `tensors` are computed from."""
            tensors = list(tensors)
            found = graph_tools.get_dependent_inputs(graph, sources, tensors)
            cols = frozenset(n.split(":", 1)[1] for n in found if n.startswith("column:"))
            fed_by = frozenset(int(n.split(":")[1]) for n in found if n.startswith("sink:"))
            ancestors = _ancestor_ops(tensors)
            for init in initializers:
                table = init.inputs[0].op
                if table in ancestors and table.name not in seen_tables:
                    more_cols, more_sinks = depends_on(init.inputs[1:], seen_tables | {table.name})
                    cols, fed_by = cols | more_cols, fed_by | more_sinks
            return cols, fed_by

        analyzed_by_sink: Dict[int, FrozenSet[str]] = {}

        def analyzer_columns(i: int, seen: FrozenSet[int] = frozenset()) -> FrozenSet[str]:
            if i not in analyzed_by_sink:
                visitor = graph_tools.SourcedTensorsVisitor()
                nodes.Traverser(visitor).visit_value_node(sinks[i].future)
                read = visitor.sourced_tensors
                cols, fed_by = depends_on(read) if read else (frozenset(), frozenset())
                for j in fed_by:   # an analyzer fed by another's result
                    if j not in seen and j != i:
                        cols |= analyzer_columns(j, seen | {i})
                analyzed_by_sink[i] = cols
            return analyzed_by_sink[i]

        result = {}
        for name in sorted(outputs):
            direct, fed_by = depends_on([outputs[name]])
            analyzed: FrozenSet[str] = frozenset()
            for i in fed_by:
                analyzed |= analyzer_columns(i)
            result[name] = OutputSources(direct=direct, analyzed=analyzed)
    return result


def _ancestor_ops(tensors) -> set:
    """Every op `tensors` (dense, sparse or ragged) are computed from, control inputs included."""
    import tensorflow as tf

    stack = [t.op for t in tf.nest.flatten(tensors, expand_composites=True)]
    seen = set()
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen
