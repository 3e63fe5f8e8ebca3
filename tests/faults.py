"""Fault injection through the public filter hook (clean.filters), for failure tests."""

import numpy as np


def explode(batch):
    raise RuntimeError("injected failure in a DoFn")


def keep_all(batch):
    return np.zeros(batch.num_rows, bool)


def slow(batch):
    """Keeps every row, slowly: a run that takes long enough to watch (3 s a batch) or to kill
    ($DATAPREP_FAULT_SLEEP seconds). Marks that the clean stage has begun (a file `clean` in
    $DATAPREP_FAULT_DIR): a point at which a test kills the launcher."""
    import os
    import time

    folder = os.environ.get("DATAPREP_FAULT_DIR")
    if folder:
        with open(os.path.join(folder, "clean"), "a", encoding="utf-8") as f:
            f.write(f"{batch.num_rows}\n")
    time.sleep(float(os.environ.get("DATAPREP_FAULT_SLEEP", "3")))
    return np.zeros(batch.num_rows, bool)


def append_to_input(batch):
    """Keeps every row, and the first time it is called appends rows to the file named by
    $DATAPREP_FAULT_APPEND: an input that grows while the run reads it (issue 35)."""
    import os

    path = os.environ.get("DATAPREP_FAULT_APPEND")
    if path and not os.path.exists(path + ".appended"):
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(f"late{i},a,1.5,{i},late\n" for i in range(500)))
        open(path + ".appended", "w").close()
    return np.zeros(batch.num_rows, bool)
