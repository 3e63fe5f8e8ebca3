"""The reuse key of a run: what must be equal for an earlier run's outputs to stand for this one.

A rerun is answered with a COMPLETE run's outputs (`reused_from`) only when every part of the
key is equal:

- `config_hash`: the config as validated (`Config.config_hash`);
- `inputs`: the fingerprint of every input file's uri and sha256 (`inputs_fingerprint`);
- `code_version`: dataprep's package version and git commit (`0.1.0+g<commit>[.dirty]`);
- `code`: a sha256 of dataprep's own source files, so an edited checkout (`.dirty`) or a
  reinstalled package with the same version is still told apart;
- `stack`: the versions of the libraries whose behaviour shapes the outputs (Beam, TFT,
  tfx-bsl, TensorFlow, pyarrow);
- `user_code`: a sha256 per user module the config loads (`clean.filters`,
  `features.preprocessing_fn`) and per module they import from the same places (beside the
  config, or in the user module's own package), found by reading their `import` statements.
  Data files a user module reads are not in it: name them as inputs, or run with `--force`.

The parts are recorded on the run (`reuse_key`, `code_fingerprint`, `stack`, `user_code`) and
`dataprep diff` names the parts that differ.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from pipeline.config import Config, user_code
from pipeline.version import code_version

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the folder of pipeline/, transforms/, runners/
OWN_PACKAGES = ("pipeline", "transforms", "runners")
STACK = ("apache-beam", "tensorflow-transform", "tfx-bsl", "tensorflow", "pyarrow")


@dataclass(frozen=True)
class RunKey:
    """The parts of a run's reuse key, and their digest."""

    config_hash: str
    inputs: str
    code_version: str
    code: str
    stack: Dict[str, str] = field(default_factory=dict)
    user_code: Dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def properties(self) -> Dict[str, str]:
        """What the run context records of the key (config_hash, inputs_fingerprint and
        code_version are recorded under their own names already)."""
        return {"reuse_key": self.digest, "code_fingerprint": self.code,
                "stack": json.dumps(self.stack, sort_keys=True),
                "user_code": json.dumps(self.user_code, sort_keys=True)}


def run_key(cfg: Config, inputs_fingerprint: str) -> RunKey:
    """The reuse key of running `cfg` on inputs whose fingerprint is `inputs_fingerprint`."""
    return RunKey(config_hash=cfg.config_hash, inputs=inputs_fingerprint, code_version=code_version(),
                  code=code_fingerprint(), stack=stack_versions(),
                  user_code=user_code_hashes(user_code(cfg), cfg.base_dir))


def _sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A sha256 over dataprep's own Python files (path and content), computed once per process."""
    return source_fingerprint(_HERE, OWN_PACKAGES)


def source_fingerprint(root: str, packages: Sequence[str]) -> str:
    """A sha256 over the `.py` files of `packages` under `root`: their paths and contents."""
    h = hashlib.sha256()
    for package in packages:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    h.update(os.path.relpath(path, root).encode() + b"\0" + _sha256_file(path).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def stack_versions() -> Dict[str, str]:
    out = {}
    for dist in STACK:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def user_code_hashes(paths: Sequence[str], config_dir: str) -> Dict[str, str]:
    """{module name: sha256 of its file} for the modules of `paths` (`module:function`) and,
    transitively, the modules they import that live beside the config or in the user module's
    own top-level package (not dataprep's packages, not installed libraries). A package is its
    `__init__.py`; a module that cannot be found is left out (its import was checked already)."""
    if not paths:
        return {}
    if config_dir not in sys.path:
        sys.path.append(config_dir)    # as load_function does: the config's folder is searched last
    roots = [os.path.abspath(config_dir)]
    named = {p.partition(":")[0] for p in paths}
    for name in named:    # the user module's own top-level package (or folder) is the user's code too
        origin = _origin(name)
        if origin:
            folder = os.path.dirname(os.path.abspath(origin))      # a package's, or a module's folder
            depth = name.count(".") if origin.endswith("__init__.py") else max(name.count(".") - 1, 0)
            for _ in range(depth):
                folder = os.path.dirname(folder)
            roots.append(folder)
    todo = sorted(named)
    out: Dict[str, str] = {}
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] in OWN_PACKAGES:
            continue
        seen.add(name)
        origin = _origin(name)
        if (origin is None or not origin.endswith(".py") or _installed(origin)
                or not (name in named or _under(origin, roots))):
            continue
        out[name] = _sha256_file(origin)
        todo += [m for m in _imported_modules(origin, name) if m not in seen]
    return dict(sorted(out.items()))


def _origin(name: str) -> Optional[str]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _under(path: str, roots: Iterable[str]) -> bool:
    path = os.path.abspath(path)
    return any(os.path.commonpath([path, root]) == root for root in roots)


def _installed(path: str) -> bool:
    return "site-packages" in path.split(os.sep) or "dist-packages" in path.split(os.sep)


def _imported_modules(path: str, module: str) -> List[str]:
    """The modules `path` (the module `module`) imports, as absolute names: `import a.b` gives
    a and a.b, `from a import b` gives a and a.b (b may be a submodule), relative imports
    resolved against the module's package."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix:
                parts = prefix.split(".")
                found += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            found += [f"{prefix}.{alias.name}" if prefix else alias.name for alias in node.names if alias.name != "*"]
    return found


def changed_parts(a: Dict[str, object], b: Dict[str, object]) -> List[str]:
    """The parts of two runs' recorded keys that differ (run context properties, as
    `pipeline.lineage._props` gives them): config, inputs, code_version, code, stack, user_code
    (with the modules that differ: `user_code:mymod`). Runs recorded before the key existed
    have no `code_fingerprint`: reported as `code` unknown."""
    out = []
    for part, prop in (("config", "config_hash"), ("inputs", "inputs_fingerprint"), ("code_version", "code_version"),
                       ("code", "code_fingerprint"), ("stack", "stack")):
        if a.get(prop) != b.get(prop):
            out.append(part)
    ua, ub = json.loads(a.get("user_code") or "{}"), json.loads(b.get("user_code") or "{}")
    out += [f"user_code:{m}" for m in sorted(set(ua) | set(ub)) if ua.get(m) != ub.get(m)]
    return out
