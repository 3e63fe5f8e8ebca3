"""The layering holds: transforms/ knows nothing of the config, MLMD or the launcher
(never imports pipeline or runners), and runners/ never imports pipeline. Read from each
file's imports (ast), including imports inside functions."""

from __future__ import annotations

import ast
import glob
import os

import pytest

from tests.conftest import ROOT

FORBIDDEN = {"transforms": ("pipeline", "runners"), "runners": ("pipeline",)}


def _imports(path: str):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    files = glob.glob(os.path.join(ROOT, layer, "**", "*.py"), recursive=True)
    assert files
    wrong = [f"{os.path.relpath(path, ROOT)}:{line} imports {name}"
             for path in files for line, name in _imports(path)
             if name.split(".")[0] in FORBIDDEN[layer]]
    assert not wrong, wrong


def test_no_class_name_is_defined_in_two_layers():
    """A config model and a transform's spec never share a name (RuleConfig → RuleSpec)."""
    where = {}
    for layer in ("pipeline", "transforms", "runners"):
        for path in glob.glob(os.path.join(ROOT, layer, "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    where.setdefault(node.name, set()).add(layer)
    twice = {name: sorted(layers) for name, layers in where.items() if len(layers) > 1}
    assert not twice, twice


# Beam's private runner, worker and pickler modules, and objsize: patched only behind the fence
PRIVATE = ("apache_beam.runners.portability.fn_api_runner", "apache_beam.runners.worker", "apache_beam.internal",
           "objsize")


def test_only_the_tuning_fence_imports_beams_private_modules():
    """runners/tuning/ is the one place that touches Beam's runner, worker and pickler internals
    (and objsize, which Beam's worker uses to weigh side inputs): everything else sees Beam's API."""
    fence = os.path.join(ROOT, "runners", "tuning")
    files = [p for layer in ("pipeline", "transforms", "runners")
             for p in glob.glob(os.path.join(ROOT, layer, "**", "*.py"), recursive=True)]
    outside = [f"{os.path.relpath(path, ROOT)}:{line} imports {name}"
               for path in files if not path.startswith(fence + os.sep)
               for line, name in _imports(path) if name.startswith(PRIVATE)]
    assert not outside, outside
    inside = {name for path in glob.glob(os.path.join(fence, "*.py")) for _, name in _imports(path)}
    assert any(name.startswith(PRIVATE) for name in inside)     # the check looks at the right names
