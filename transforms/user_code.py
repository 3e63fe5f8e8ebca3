"""User code named in a config as `module:function` (clean filters, a preprocessing_fn)."""

from __future__ import annotations

import importlib
from typing import Callable


def load_function(path: str) -> Callable:
    """`module:function` → the function. The module must be importable on workers too
    (as TFX's `module_file`): a DoFn loads it in `setup()`, not from the launcher's `__main__`.

    Raises:
      ModuleNotFoundError: the module cannot be imported.
      ValueError: the module has no such function.
    """
    module_name, _, name = path.partition(":")
    fn = getattr(importlib.import_module(module_name), name, None)
    if fn is None:
        raise ValueError(f"{module_name} has no function {name!r}")
    return fn
