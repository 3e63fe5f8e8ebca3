"""Clean: typed and validated rows (`validate.py`), then one copy per key (`dedup.py`)."""

from transforms.clean.dedup import DedupResult, DedupSpec, Deduplicate, dedup_key_columns, dedup_table, first_of_key
from transforms.clean.validate import (ARROW_TYPES, RuleSpec, ValidateResult, ValidateRows, ValidateSpec, coerce,
                                       example_ids, normalize_labels, record_texts, rule_failures, validate_batch)

__all__ = ["ARROW_TYPES", "DedupResult", "DedupSpec", "Deduplicate", "RuleSpec", "ValidateResult", "ValidateRows",
           "ValidateSpec", "coerce", "dedup_key_columns", "dedup_table", "example_ids", "first_of_key",
           "normalize_labels", "record_texts", "rule_failures", "validate_batch"]
