"""`credfs://user:password@host/path`: a Beam FileSystem whose URLs carry credentials, as
`https://u:pw@h/...` or an object store's signed URLs do, served from a local folder
($DATAPREP_CREDFS_ROOT) so that a run can read from it offline. Importing this module
registers it (Beam finds FileSystem subclasses by their scheme)."""

from __future__ import annotations

import os
import re

from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

ROOT_ENV = "DATAPREP_CREDFS_ROOT"
_URL = re.compile(r"^(credfs://[^/]*)(/.*)?$")


class CredentialsFileSystem(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return "credfs"

    @staticmethod
    def _local(url: str) -> str:
        found = _URL.match(url)   # LocalFileSystem calls back with local paths too
        return os.environ[ROOT_ENV] + (found.group(2) or "/") if found else url

    def match(self, patterns, limits=None):
        results = super().match([self._local(p) for p in patterns], limits)
        root = os.environ[ROOT_ENV]
        return [MatchResult(pattern, [FileMetadata(_URL.match(pattern).group(1) + m.path[len(root):],
                                                   m.size_in_bytes, m.last_updated_in_seconds)
                                      for m in r.metadata_list])
                for pattern, r in zip(patterns, results)]

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def exists(self, path):
        return super().exists(self._local(path))

    def size(self, path):
        return super().size(self._local(path))
