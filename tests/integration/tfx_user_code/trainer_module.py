"""The Trainer module of tests/integration/tfx_pipeline.py (TFX venv): a small Keras model over dataprep's
transformed features, through dataprep's TransformGraph (`fn_args.transform_graph_path`).

- The training data are dataprep's transformed TFRecords, read by TFX's own data accessor with
  the transformed schema of the TransformGraph (`transformed_metadata/`), plus the label and
  example_id, which pass through TFT untouched.
- Before training, every row the accessor yields for the train and eval splits is written to
  `<model_run_dir>/seen/<split>.parquet` (example_id and the transformed features), so that
  the test compares what the model saw with dataprep's Parquet `transformed/` shards.
- The exported model serves raw tf.Examples: parsed with the raw feature spec of the graph's
  `metadata/`, transformed by `transform_features_layer()`; its signature also returns the
  transformed features, which the pipeline script compares with dataprep's.
"""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

EXAMPLE_ID = "example_id"


def _schema(transform_output: tft.TFTransformOutput, label: str):
    spec = dict(transform_output.transformed_feature_spec())
    spec[label] = tf.io.FixedLenFeature([], tf.string)
    spec[EXAMPLE_ID] = tf.io.FixedLenFeature([], tf.string)
    return schema_utils.schema_from_feature_spec(spec)


def _dataset(fn_args, files, schema, label, batch_size, epochs=None, shuffle=True):
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=label, num_epochs=epochs,
                                             shuffle=shuffle)
    return fn_args.data_accessor.tf_dataset_factory(files, options, schema)


def _record_seen(fn_args, schema, label, features, out_dir):
    """Every row of the train and eval files as the accessor yields it, one Parquet file per split."""
    os.makedirs(out_dir, exist_ok=True)
    for split, files in (("train", fn_args.train_files), ("eval", fn_args.eval_files)):
        columns = {EXAMPLE_ID: [], **{f: [] for f in features}}
        for batch, _ in _dataset(fn_args, files, schema, label, 1024, epochs=1, shuffle=False):
            columns[EXAMPLE_ID] += [v.decode() for v in batch[EXAMPLE_ID].numpy().tolist()]
            for f in features:
                columns[f] += batch[f].numpy().tolist()
        pq.write_table(pa.table(columns), os.path.join(out_dir, f"{split}.parquet"))


def run_fn(fn_args) -> None:
    config = fn_args.custom_config
    label, classes = config["label"], config["classes"]
    transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    features = sorted(f for f in transform_output.transformed_feature_spec())
    schema = _schema(transform_output, label)
    _record_seen(fn_args, schema, label, features, os.path.join(fn_args.model_run_dir, "seen"))

    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(classes), tf.range(len(classes), dtype=tf.int64)), -1)

    def prepare(batch, labels):
        x = tf.stack([tf.cast(tf.reshape(batch[f], [-1]), tf.float32) for f in features], axis=1)
        return x, table.lookup(tf.reshape(labels, [-1]))

    train = _dataset(fn_args, fn_args.train_files, schema, label, 64).map(prepare)
    evaluation = _dataset(fn_args, fn_args.eval_files, schema, label, 64).map(prepare)
    inputs = keras.Input(shape=(len(features),), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, steps_per_epoch=fn_args.train_steps, validation_data=evaluation,
              validation_steps=fn_args.eval_steps, epochs=1, verbose=0)

    model.tft_layer = transform_output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(serialized):
        raw = tf.io.parse_example(serialized, transform_output.raw_feature_spec())
        transformed = model.tft_layer(raw)
        x = tf.stack([tf.cast(tf.reshape(transformed[f], [-1]), tf.float32) for f in features], axis=1)
        return {"probabilities": model(x), **{f: transformed[f] for f in features}}

    model.save(fn_args.serving_model_dir, save_format="tf", signatures={"serving_default": serve})
