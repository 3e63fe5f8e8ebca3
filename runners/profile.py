"""The execution profile: how a job's shuffles of rows move data on this runner, decided once.

Every stage that shuffles rows (dedup, the example-id check, the annotation join, the group
split, near-dedup's joins, the writes) and the two stage boundaries where rows wait for a
result of their own stage (the split's thresholds, TFT's analysis) take the profile's
`Shuffle` (`transforms/spill.py`):

- DirectRunner and Flink: rows cross as paths of lz4 Arrow files in the run's `tmp/spill/`
  (the DirectRunner holds a shuffle's whole input in memory, Flink's data plane buffers a
  bundle's output on the Java heap: bench/RESULTS.md);
- Dataflow: the service's own shuffle (Dataflow Shuffle spills and scales it; files under a
  gs:// output would add a write and a read of every row to Cloud Storage);
- buckets: one per 64 MB of input, at least 16, so one bucket stays about a read range's size.
"""

from __future__ import annotations

from typing import Optional

from transforms.spill import Shuffle

MIN_BUCKETS = 16
BUCKET_BYTES = 64 << 20


def shuffle_buckets(input_bytes: int) -> int:
    """16, or one per 64 MB of input when that is more. Which bucket a row is in changes no
    output: each bucket is a set of whole keys."""
    return max(MIN_BUCKETS, -(-input_bytes // BUCKET_BYTES))


def execution_profile(runner: str, input_bytes: int, spill_dir: Optional[str]) -> Shuffle:
    """The `Shuffle` of a job on `runner` reading `input_bytes`, spilling (where it does) to `spill_dir`."""
    from runners.dataflow import is_dataflow

    spill = None if is_dataflow(runner) else spill_dir
    return Shuffle(spill=spill, buckets=shuffle_buckets(input_bytes))
