"""Clean: typed and validated rows (`validate.py`), then one copy per key (`dedup.py`), then
near-duplicates (`near_dedup.py`: the stage; `minhash.py`: its MinHash/LSH maths;
`leakage.py`: near-duplicate pairs across splits)."""

from transforms.clean.dedup import DedupResult, DedupSpec, Deduplicate, dedup_key_columns, dedup_table, first_of_key
from transforms.clean.leakage import CrossSplitPairs
from transforms.clean.minhash import minhash_signatures, optimal_param, shingle_table
from transforms.clean.near_dedup import NearDedupResult, NearDedupSpec, NearDeduplicate
from transforms.clean.validate import (ARROW_TYPES, RuleSpec, ValidateResult, ValidateRows, ValidateSpec, coerce,
                                       example_ids, normalize_labels, record_texts, rule_failures, validate_batch)

__all__ = ["ARROW_TYPES", "CrossSplitPairs", "DedupResult", "DedupSpec", "Deduplicate", "NearDedupResult",
           "NearDedupSpec", "NearDeduplicate", "RuleSpec", "ValidateResult", "ValidateRows", "ValidateSpec", "coerce",
           "dedup_key_columns", "dedup_table", "example_ids", "first_of_key", "minhash_signatures",
           "normalize_labels", "optimal_param", "record_texts", "rule_failures", "shingle_table", "validate_batch"]
