"""Are two runs' outputs the same files? The rule of the performance work: the same config
and seed give byte-identical outputs.

    python bench/same_outputs.py RUN_DIR_A RUN_DIR_B

Compares, file by file (md5), raw/, transformed/, quarantine/, duplicates/ and the
vocabularies (transform_fn/assets/), and the transformed schema; prints what differs and
exits 1 if anything does. saved_model.pb is left out: TensorFlow writes it differently on
every run of the same code.
"""

from __future__ import annotations

import hashlib
import os
import sys

COMPARED = ("raw", "transformed", "quarantine", "duplicates", os.path.join("transform_fn", "assets"),
            "transformed_metadata")


def digests(run_dir: str) -> dict:
    """{relative path: md5} of the compared files under `run_dir`."""
    out = {}
    for top in COMPARED:
        base = os.path.join(run_dir, top)
        for folder, _, files in os.walk(base):
            for name in files:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, run_dir)] = hashlib.md5(f.read()).hexdigest()
    return out


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = (digests(d) for d in sys.argv[1:])
    if not a:
        sys.exit(f"no outputs under {sys.argv[1]}")
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    for k in differ:
        print(f"differs: {k} ({'missing in B' if k not in b else 'missing in A' if k not in a else 'content'})")
    print(f"{len(a)} files compared, {len(differ)} differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
