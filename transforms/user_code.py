"""User code named in a config as `module:function` (clean filters, a preprocessing_fn)."""

import importlib
import os
import sys
from typing import Callable, List, Sequence


class UserCodeError(ValueError):
    """`module:function` cannot be loaded: the module does not import, or the name is not a
    function. The message is one line naming the path."""


def load_function(path: str, search_path: Sequence[str] = ()) -> Callable:
    """`module:function` → the function. The module must be importable on workers too
    (as TFX's `module_file`): a DoFn loads it in `setup()`, not from the launcher's `__main__`.
    The folders of `search_path` (the config's folder) are appended to `sys.path` first, in
    this process and in every worker that loads it, so a module beside the config is found.

    Raises:
      UserCodeError: the module cannot be imported (any error it raises while importing,
        named), has no such attribute, or the attribute is not callable.
    """
    for folder in search_path:
        if folder and folder not in sys.path:
            sys.path.append(folder)
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user module may fail to import with any error: named, one line
        raise UserCodeError(f"{path}: cannot import {module_name!r} ({type(e).__name__}: {e})".replace("\n", " ")
                            ) from e
    fn = getattr(module, name, None)
    if fn is None:
        raise UserCodeError(f"{path}: {module_name} has no function {name!r}")
    if not callable(fn):
        raise UserCodeError(f"{path}: {module_name}.{name} is a {type(fn).__name__}, not a function")
    return fn


def local_modules(paths: Sequence[str], folder: str) -> List[str]:
    """The modules of `module:function` paths that live in `folder` (the config's), as the
    files or package folders to ship to workers that do not have it: `mymod.py` for
    `mymod:fn`, the folder `pkg/` for `pkg.sub:fn`. Modules found elsewhere (installed, or
    on the launcher's own path) are not listed."""
    found = []
    for path in paths:
        top = path.partition(":")[0].split(".")[0]
        file, package = os.path.join(folder, top + ".py"), os.path.join(folder, top)
        if os.path.isfile(file):
            found.append(file)
        elif os.path.isfile(os.path.join(package, "__init__.py")):
            found.append(package)
    return sorted(set(found))
