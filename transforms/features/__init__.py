"""Features: TensorFlow Transform analysed on train only, applied to every split.

`adapter.py` Arrow ↔ TFT batches, `library.py` the declarative preprocessing functions
(and `report_stat`, `tokenize` for user code), `stage.py` the Beam stage
(`AnalyzeAndTransform`), `stats.py` the analysed statistics read back from the saved graph.
User preprocessing_fns import `from transforms.features import report_stat, tokenize`.
"""

from transforms.features.adapter import (PASSTHROUGH_PREFIX, TftInput, feature_spec_for, from_list_array,
                                         output_types, to_list_array)
from transforms.features.library import (FeatureSpec, combined_preprocessing_fn, counted,
                                         declarative_preprocessing_fn, report_stat, tokenize)
from transforms.features.stage import AnalyzeAndTransform, FeaturesResult
from transforms.features.stats import read_stats, summarize_transform

__all__ = ["PASSTHROUGH_PREFIX", "AnalyzeAndTransform", "FeatureSpec", "FeaturesResult", "TftInput",
           "combined_preprocessing_fn", "counted", "declarative_preprocessing_fn", "feature_spec_for",
           "from_list_array", "output_types", "read_stats", "report_stat", "summarize_transform", "to_list_array",
           "tokenize"]
