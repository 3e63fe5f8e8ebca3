"""Fault injection through the public filter hook (clean.filters), for failure tests."""

import numpy as np


def explode(batch):
    raise RuntimeError("injected failure in a DoFn")


def keep_all(batch):
    return np.zeros(batch.num_rows, bool)


def slow(batch):
    """Keeps every row, slowly: a run that takes long enough to watch."""
    import time

    time.sleep(3)
    return np.zeros(batch.num_rows, bool)
