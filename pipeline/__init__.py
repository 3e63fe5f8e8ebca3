import os

# TensorFlow Transform works with Keras 2 (`tf_keras`) and sets this itself, but only once
# TensorFlow is imported, by which time TensorFlow has loaded Keras 3 too (and scikit-learn
# with it, for nothing). Set first, TensorFlow loads Keras 2 only. An explicit setting is respected.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
