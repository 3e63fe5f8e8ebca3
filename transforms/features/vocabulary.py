"""The vocabularies of a preprocessing_fn computed by one TFT analyzer, with TFT's own files.

Each `tft.vocabulary` is its own analyzer: about 45 Beam transforms and 13 fused stages
(accumulate, merge, two counts, prune, order, a text write with its shuffle, the bindings),
five vocabularies a fifth of a 10k-row run (bench/RESULTS.md). `FusedVocabularies` collects
the vocabularies a preprocessing_fn asks for and computes them in one PTransform analyzer (what
`tft.experimental.ptransform_analyzer` builds): each batch reduced to (token, count) per vocabulary in
the graph (TFT's own `reduce_batch_weighted_counts`, which also drops the empty tokens and
those with a line break), the counts summed per (vocabulary, token) by one `CombinePerKey`,
each vocabulary pruned by one combine (`PrunedVocabularies`: the threshold and `top_k` applied
as tokens arrive, so a worker holds each vocabulary's `top_k` tokens, not every distinct token
of every vocabulary), then every vocabulary ordered and written by one step.

What comes out is what `tft.compute_and_apply_vocabulary` gives, byte for byte: the same
file (tokens by decreasing count, ties by decreasing token; `frequency_threshold`, then
`top_k`; TFT's placeholder entry when nothing is left) under the same asset name, the same
size annotations and asset map in the transformed metadata, and the same lookup
(`tft.apply_vocabulary`). Only vocabularies whose input needs no other analyzer can share
the analyzer (they all run in TFT's first phase); the others keep `tft.vocabulary`.
"""

import heapq
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems


class VocabularyRequest:
    """One vocabulary asked of `FusedVocabularies`: its tokens (a string Tensor or
    SparseTensor), key (TFT's `vocab_filename`) and pruning; `path`, `unpruned_size` and
    `size` are set by `FusedVocabularies.compute()`."""

    def __init__(self, tokens, key: str, top_k: Optional[int], frequency_threshold: Optional[float]):
        from tensorflow_transform import analyzers

        self.tokens = tokens
        self.key = key
        self.filename = analyzers._get_vocab_filename(key, store_frequency=False)   # TFT's asset name
        self.top_k, self.frequency_threshold = analyzers._get_top_k_and_frequency_threshold(top_k,
                                                                                          frequency_threshold)
        self.path = self.unpruned_size = self.size = None

    def annotate(self) -> None:
        """TFT's metadata of a vocabulary: the size annotations and the asset map entry."""
        from tensorflow_transform import analyzers

        analyzers._maybe_annotate_vocab_metadata(self.filename, self.unpruned_size, self.size)
        analyzers.register_vocab(self.filename, vocabulary_size=self.size, vocabulary_key=self.key,
                                 file_format="text")


class FusedVocabularies:
    """Collects `request()`s while a preprocessing_fn is traced; `compute()` then adds the one
    analyzer that computes them all."""

    def __init__(self):
        self.requests: List[VocabularyRequest] = []

    def request(self, tokens, key: str, top_k: Optional[int] = None,
                frequency_threshold: Optional[float] = None) -> VocabularyRequest:
        req = VocabularyRequest(tokens, key, top_k, frequency_threshold)
        self.requests.append(req)
        return req

    def compute(self) -> None:
        if not self.requests:
            return
        import tensorflow as tf
        from tensorflow_transform import analyzer_nodes, analyzers, tf_utils
        from tensorflow_transform.experimental.analyzers import _apply_analyzer

        regex = analyzers.get_vocab_newline_characters_regex(tf.string, "text")
        inputs = []
        with tf.compat.v1.name_scope("vocabularies"):
            for req in self.requests:
                values = req.tokens.values if isinstance(req.tokens, tf.SparseTensor) else req.tokens
                weights = tf.ones(tf.shape(values), tf.float64)     # TFT's weighted path: counts as float64
                reduced = tf_utils.reduce_batch_weighted_counts(req.tokens, weights, filter_regex=regex)
                inputs += [reduced.unique_x, reduced.summed_weights_per_x]
            # per vocabulary: its file (an asset, holding what TFT's does before the analysis), its
            # unpruned size and its size. (`tft.experimental.ptransform_analyzer` would do, but in TFT
            # 1.16 it takes every output for an asset once one is.)
            path = analyzer_nodes.TensorInfo(tf.string, [], analyzer_nodes.TemporaryAssetInfo(
                b"TEMPORARY_ASSET_VALUE", "text"))
            size = analyzer_nodes.TensorInfo(tf.int64, [], None)
            ptransform = OrderAndWriteVocabularies([(r.filename, r.top_k, r.frequency_threshold)
                                                    for r in self.requests])
            with tf.compat.v1.name_scope("ptransform"):
                outputs = _apply_analyzer(ptransform, *inputs,
                                          output_tensor_info_list=[path, size, size] * len(self.requests))
        for i, req in enumerate(self.requests):
            req.path, req.unpruned_size, req.size = outputs[3 * i:3 * i + 3]


# ---- the Beam side ------------------------------------------------------------------------

VocabularySpec = Tuple[str, Optional[int], Optional[float]]   # asset name, top_k, frequency_threshold


def _token_counts(batch: Sequence[np.ndarray]) -> Iterable[Tuple[Tuple[int, bytes], float]]:
    """A batch (unique tokens, their counts) per vocabulary → ((vocabulary, token), count)."""
    for i in range(0, len(batch), 2):
        for token, count in zip(batch[i].tolist(), batch[i + 1].tolist()):
            yield (i // 2, token), count


def ordered_vocabulary(counts: List[Tuple[float, bytes]], top_k: Optional[int],
                       frequency_threshold: Optional[float],
                       unpruned: Optional[int] = None) -> Tuple[List[bytes], int, int]:
    """(tokens in file order, unpruned size, size) of one vocabulary from its (count, token)
    pairs, as TFT's `VocabularyPrune` and `VocabularyOrderAndWrite` make them: the threshold,
    then the `top_k` largest (count, token), largest first; TFT's placeholder if none is left;
    each size at least 1 (TFT counts the placeholder). `unpruned`: the distinct tokens before
    pruning, when `counts` was pruned already (default: `len(counts)`)."""
    from tensorflow_transform import analyzers

    unpruned = len(counts) if unpruned is None else unpruned
    if frequency_threshold:
        counts = [c for c in counts if c[0] >= frequency_threshold]
    counts = sorted(counts, reverse=True)
    if top_k is not None:
        counts = counts[:top_k]
    size = len(counts)
    if not counts:
        counts = [analyzers.get_empy_vocabulary_dummy_value("string")]
    return [token for _, token in counts], max(unpruned, 1), max(size, 1)


class PrunedVocabularies(beam.CombineFn):
    """(vocabulary, (count, token)) pairs, one per distinct token → {vocabulary: (distinct
    tokens, the (count, token) pairs that can still be in its file)}: the ones at or above its
    `frequency_threshold`, and of those only the `top_k` largest. Pruned as the pairs arrive
    and as accumulators merge (at most twice `top_k` pairs held per vocabulary), so memory is
    bounded by the `top_k`s, not by the distinct tokens; a vocabulary without `top_k` keeps
    every token that passes its threshold, as its file will."""

    def __init__(self, specs: List[VocabularySpec]):
        self._specs = list(specs)

    def create_accumulator(self) -> Dict[int, list]:
        return {}

    def _prune(self, i: int, kept: list) -> list:
        top_k = self._specs[i][1]
        return heapq.nlargest(top_k, kept) if top_k is not None and len(kept) > top_k else kept

    def add_input(self, acc: Dict[int, list], pair) -> Dict[int, list]:
        i, (count, token) = pair
        entry = acc.setdefault(i, [0, []])
        entry[0] += 1
        threshold = self._specs[i][2]
        if not threshold or count >= threshold:
            entry[1].append((count, token))
            top_k = self._specs[i][1]
            if top_k is not None and len(entry[1]) > 2 * max(top_k, 1):
                entry[1] = self._prune(i, entry[1])
        return acc

    def merge_accumulators(self, accs) -> Dict[int, list]:
        out: Dict[int, list] = {}
        for acc in accs:
            for i, (n, kept) in acc.items():
                entry = out.setdefault(i, [0, []])
                entry[0] += n
                entry[1] = self._prune(i, entry[1] + kept)
        return out

    def extract_output(self, acc: Dict[int, list]) -> Dict[int, Tuple[int, list]]:
        return {i: (n, self._prune(i, kept)) for i, (n, kept) in acc.items()}


class _WriteVocabulariesFn(beam.DoFn):
    """{vocabulary: (distinct tokens, kept (count, token) pairs)} → each vocabulary's file, and
    per vocabulary its path, unpruned size and size on outputs `path<i>`, `unpruned<i>`, `size<i>`."""

    def __init__(self, specs: List[VocabularySpec], directory: str):
        self._specs = specs
        self._directory = directory

    def process(self, pruned: Dict[int, Tuple[int, list]]):
        for i, (filename, top_k, threshold) in enumerate(self._specs):
            distinct, kept = pruned.get(i, (0, []))
            tokens, unpruned, size = ordered_vocabulary(kept, top_k, threshold, unpruned=distinct)
            path = os.path.join(self._directory, filename)
            with FileSystems.create(path) as f:                 # WriteToText's bytes: each token, then \n
                f.write(b"".join(t + b"\n" for t in tokens))
            yield beam.pvalue.TaggedOutput(f"path{i}", np.array(path.encode()))
            yield beam.pvalue.TaggedOutput(f"unpruned{i}", np.array(unpruned, np.int64))
            yield beam.pvalue.TaggedOutput(f"size{i}", np.array(size, np.int64))


def _analyzer_base():
    from tensorflow_transform.beam import experimental

    return experimental.PTransformAnalyzer


class OrderAndWriteVocabularies(_analyzer_base()):
    """TFT analyzer batches (tokens, counts per vocabulary) → per vocabulary one-element
    PCollections of its file's path, unpruned size and size (the analyzer's outputs in order).
    The files go in the temporary folder TFT gives the analyzer (`base_temp_dir`)."""

    def __init__(self, specs: List[VocabularySpec]):
        super().__init__()
        self._specs = list(specs)

    def expand(self, batches):
        tags = [f"{kind}{i}" for i in range(len(self._specs)) for kind in ("path", "unpruned", "size")]
        written = (batches
                   | "TokenCounts" >> beam.FlatMap(_token_counts)
                   | "SumPerToken" >> beam.CombinePerKey(sum)
                   | "ByVocabulary" >> beam.MapTuple(lambda key, count: (key[0], (count, key[1])))
                   | "Prune" >> beam.CombineGlobally(PrunedVocabularies(self._specs))
                   | "OrderAndWrite" >> beam.ParDo(_WriteVocabulariesFn(self._specs, self.base_temp_dir))
                   .with_outputs(*tags))
        return tuple(written[t] for t in tags)
