"""Split: stratified train/dev/test with exact per-stratum counts, deterministic by seed.

How it works, and what is guaranteed:
- Allocation (`allocate`): each stratum's count per split is the floor or the ceiling of
  its quota (n_stratum × fraction), each stratum's counts add up to its size, and the
  split totals are the largest-remainder rounding of N × fraction. This is matrix
  rounding, solved as a small flow problem over strata × splits.
- Assignment: every example gets a 64-bit hash of its example_id and the seed
  (`transforms.batches.hash_columns`).
  Within a stratum, examples in hash order fill the splits in config order. So the
  assignment does not depend on bundle order, sharding or runner, and adding rows moves
  an existing example only when a cut point moves past it.
- Scale: the cut points are exact order statistics found without gathering a stratum:
  one combine counts the strata; since hashes are uniform, the k-th smallest of n lies
  within ±10σ of k/n·2⁶⁴, so a second combine counts the hashes below that band and
  collects only those inside it (≈20·√n values per cut). Memory does not grow with n.

`allocation.py` the counts per stratum and split, `cuts.py` the cut points from the unit
hashes and each row's split, `stage.py` the Beam stage (`StratifiedSplit`).
"""

from transforms.split.allocation import OTHER, allocate, band, largest_remainder, merge_small_strata, plan_split
from transforms.split.cuts import STRATUM, UNIT_HASH, MergeBands, assign_splits, band_stats, thresholds_from
from transforms.split.stage import (NULL_TOKEN, EmptySplit, SplitResult, StratifiedSplit, balance_table, group_units,
                                    stratum_keys)

__all__ = ["NULL_TOKEN", "OTHER", "STRATUM", "UNIT_HASH", "EmptySplit", "MergeBands", "SplitResult", "StratifiedSplit", "allocate",
           "assign_splits", "balance_table", "band", "band_stats", "group_units", "largest_remainder",
           "merge_small_strata", "plan_split", "stratum_keys", "thresholds_from"]
