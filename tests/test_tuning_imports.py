"""runners/tuning/imports.py: inside `lean()` Beam and TensorFlow Transform import without the
packages they load only in case, TensorFlow gets Python's own distutils, and afterwards every
one of those packages imports normally. In a fresh interpreter: this one has them already."""

import json
import subprocess
import sys

PROBE = r"""
import json, os, sys
from runners.tuning.imports import lean
with lean():
    import apache_beam
    import tensorflow_transform.beam
inside = {name: name in sys.modules for name in ("googleapiclient", "pymongo", "bson", "pkg_resources", "setuptools")}
import distutils
distutils_file = distutils.__file__
from tensorflow.python.distribute.cluster_resolver import gce_cluster_resolver
import googleapiclient.discovery, pymongo, bson
print(json.dumps({"inside": inside, "distutils": distutils_file, "stdlib": os.path.dirname(os.__file__),
                  "shim_first": type(sys.meta_path[0]).__module__ == "_distutils_hack",
                  "gce_client": gce_cluster_resolver._GOOGLE_API_CLIENT_INSTALLED,
                  "after": all(m in sys.modules for m in ("googleapiclient.discovery", "pymongo", "bson"))}))
"""


def test_lean_imports_leave_out_the_optional_packages_and_give_them_back():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["inside"] == {"googleapiclient": False, "pymongo": False, "bson": False, "pkg_resources": False,
                             "setuptools": False}
    assert got["distutils"].startswith(got["stdlib"]) and "setuptools" not in got["distutils"]
    assert got["shim_first"]               # setuptools' finder is back where it was
    assert got["gce_client"] is False      # TensorFlow took googleapiclient for missing, as intended
    assert got["after"]                    # and it, pymongo and bson import normally afterwards


def test_lean_blocks_only_what_is_not_imported_yet():
    import pymongo  # noqa: F401   (imported: lean() must leave it alone)

    from runners.tuning.imports import OPTIONAL, lean

    before = {name: sys.modules.get(name, "absent") for name in OPTIONAL}
    with lean():
        assert sys.modules["pymongo"] is before["pymongo"]
        for name in OPTIONAL:
            if before[name] == "absent":
                assert sys.modules[name] is None
    assert {name: sys.modules.get(name, "absent") for name in OPTIONAL} == before


def _generations_collected(body) -> list:
    """The generations the collector passes over while `body()` runs."""
    import gc

    seen = []

    def callback(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()        # counts from a full pass, as after a run's imports
    gc.callbacks.append(callback)
    try:
        body()
    finally:
        gc.callbacks.remove(callback)
    return seen


def test_no_full_collections_passes_over_young_objects_only_then_freezes_them():
    import gc

    from runners.tuning.imports import no_full_collections

    thresholds = gc.get_threshold()

    def allocate():     # surviving containers, more than a quarter of the heap: enough for a full pass
        allocate.kept = [[] for _ in range(len(gc.get_objects()) + 200_000)]

    assert 2 in _generations_collected(allocate)    # the reference: without it, a full pass comes

    frozen_before = gc.get_freeze_count()

    def allocate_inside():
        with no_full_collections():
            assert gc.get_threshold()[:2] == thresholds[:2]
            allocate()

    try:
        seen = _generations_collected(allocate_inside)
        assert 0 in seen and 2 not in seen              # the young generations still collected
        assert gc.get_threshold() == thresholds
        assert gc.get_freeze_count() >= frozen_before + len(allocate.kept)   # what it made is frozen
    finally:
        gc.unfreeze()
