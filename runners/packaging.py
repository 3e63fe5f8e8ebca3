"""The user's modules beside the config, packaged for remote workers.

A config may name code in a module next to it (`clean.filters: [mymod:fn]`,
`features.preprocessing_fn: mymod:fn`). Locally the config's folder is put on `sys.path`;
a remote worker has no such folder, so the modules go to it as a wheel, the way TFX
ships a `module_file`. The wheel is written here, by hand (a zip with its dist-info),
so that building it needs neither a build backend nor the network, and the same modules
give the same file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from typing import Dict, List, Sequence, Tuple

DISTRIBUTION = "dataprep_user_code"
_EPOCH = (1980, 1, 1, 0, 0, 0)   # zip entries dated alike: the same modules, the same bytes


def module_sources(modules: Sequence[str]) -> List[Tuple[str, str]]:
    """(path inside the wheel, file on disk) of each module: a `mymod.py` file, or a
    package folder's `.py` files (caches left out), in a stable order."""
    out: List[Tuple[str, str]] = []
    for module in modules:
        if os.path.isfile(module):
            out.append((os.path.basename(module), module))
            continue
        parent = os.path.dirname(os.path.abspath(module))
        for folder, dirs, files in os.walk(module):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            out += [(os.path.relpath(os.path.join(folder, f), parent).replace(os.sep, "/"), os.path.join(folder, f))
                    for f in sorted(files) if f.endswith(".py")]
    return sorted(out)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def user_code_wheel(modules: Sequence[str], out_dir: str) -> str:
    """Writes a pure-Python wheel holding `modules` (files `mymod.py` or package folders)
    into `out_dir` and returns its path. Its version carries a hash of the sources, so
    changed code is a different file.

    Raises:
      OSError: a module cannot be read or the wheel cannot be written.
    """
    contents: Dict[str, bytes] = {}
    for name, path in module_sources(modules):
        with open(path, "rb") as f:
            contents[name] = f.read()
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + d for n, d in sorted(contents.items()))).hexdigest()
    version = f"0+{digest[:12]}"
    info = f"{DISTRIBUTION}-{version}.dist-info"
    tops = sorted({n.split("/")[0].removesuffix(".py") for n in contents})
    contents[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n"
                                    "Summary: the modules a dataprep config names beside it\n").encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: dataprep\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    contents[f"{info}/top_level.txt"] = "".join(t + "\n" for t in tops).encode()
    record = f"{info}/RECORD"
    lines = [_record_line(n, d) for n, d in contents.items()] + [f"{record},,"]
    contents[record] = "".join(line + "\n" for line in lines).encode()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{DISTRIBUTION}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in contents.items():
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.external_attr = 0o644 << 16
            z.writestr(entry, data, zipfile.ZIP_DEFLATED)
    return path
