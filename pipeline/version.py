"""The package version and the code version recorded on every run (`dataprep --version`)."""

from __future__ import annotations

import os
import subprocess


def package_version() -> str:
    """The installed distribution's version (setup.py), or "unknown" when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("beam-dataprep")
    except PackageNotFoundError:
        return "unknown"


def code_version() -> str:
    """The package version plus the git commit of the code (`0.1.0+g<commit>[.dirty]`),
    or the package version alone outside a git checkout."""
    v = package_version()
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{v}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return v
