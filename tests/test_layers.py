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
