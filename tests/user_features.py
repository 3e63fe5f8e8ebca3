"""A user preprocessing_fn (`features: {preprocessing_fn: tests.user_features:preprocessing_fn}`),
used by tests/test_features.py on the SMS data: any TFT code, in an importable module."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from transforms.features import report_stat, tokenize


def preprocessing_fn(inputs):
    """SMS `text` → its length in characters (z-scored), its token count and its token ids."""
    text = tf.squeeze(tft.sparse_tensor_to_dense_with_shape(inputs["text"], [None, 1], default_value=""), axis=1)
    length = tf.cast(tf.strings.length(text, unit="UTF8_CHAR"), tf.float32)
    mean = report_stat("text", "mean_length", tft.mean(length, name="mean_length"))
    std = report_stat("text", "std_length", tf.sqrt(tft.var(length, name="var_length")))
    tokens = tokenize(text)
    return {
        "length_z": (length - mean) / std,
        "n_tokens": _count(tokens),
        "words": tft.compute_and_apply_vocabulary(tokens, top_k=300, vocab_filename="sms_words"),
    }


def _count(tokens: tf.SparseTensor) -> tf.Tensor:
    ones = tf.SparseTensor(tokens.indices, tf.ones_like(tokens.values, tf.int64), tokens.dense_shape)
    return tf.reshape(tf.sparse.reduce_sum(ones, axis=1), [-1])   # TFT needs the rank known: [batch]
