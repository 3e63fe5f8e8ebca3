"""An input file opened for reading, decompressed when its name says it is compressed
(`.gz`, `.bz2`, `.zst`, `.xz`, ... as Beam detects them), with the end of the compressed
stream checked: a truncated or corrupt stream is an error naming the file, never a short
file read as if it were whole.

Beam's own `CompressedFile` stops at the end of the bytes without asking the decompressor
whether its stream ended, so half of a `.csv.gz` was read as a shorter file (its last,
cut record quarantined as `csv_field_count`) and the run was published.
"""

import bz2
import lzma
import zlib
from typing import Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_RAW_READ = 1 << 20       # compressed bytes read at a time (a few MB once inflated)


class CorruptInput(ValueError):
    """An input file's compressed stream is truncated or corrupt (the message names the file)."""


def compression_of(path: str) -> str:
    """Beam's compression type for `path`, by its suffix (`CompressionTypes.UNCOMPRESSED` when none)."""
    return CompressionTypes.detect_compression_type(path)


def is_compressed(path: str) -> bool:
    return compression_of(path) != CompressionTypes.UNCOMPRESSED


def open_input(uri: str, name: Optional[str] = None):
    """`uri` opened for reading: its bytes, decompressed when its suffix names a compression.

    `name` is what an error calls the file (default `uri`; a URL's credentials are not
    shown). A decompressed file reads like any other (`read(n)`, `tell()` of the
    decompressed bytes) and raises `CorruptInput` where its stream is broken or ends early.
    """
    kind = compression_of(uri)
    raw = FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)
    if kind == CompressionTypes.UNCOMPRESSED:
        return raw
    return CheckedDecompressor(raw, kind, name or uri)


def _decompressor(kind: str):
    if kind == CompressionTypes.GZIP:
        return zlib.decompressobj(zlib.MAX_WBITS | 16)     # the gzip trailer (CRC-32, size) is checked too
    if kind == CompressionTypes.DEFLATE:
        return zlib.decompressobj()                         # as Beam writes DEFLATE: with zlib's header
    if kind == CompressionTypes.BZIP2:
        return bz2.BZ2Decompressor()
    if kind == CompressionTypes.LZMA:
        return lzma.LZMADecompressor()
    if kind == CompressionTypes.ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor(max_window_size=2147483648).decompressobj()
    raise ValueError(f"unsupported compression {kind!r}")


class CheckedDecompressor:
    """A file object of the decompressed bytes of `raw`, a file of concatenated compressed
    streams (`cat a.gz b.gz` is one gzip file, as gzip reads it). At the end of `raw`, the
    last stream must have ended: otherwise `CorruptInput` (truncated); a decompressor's
    error (a bad CRC, garbage) is `CorruptInput` too. Trailing zero bytes after a gzip
    stream are padding, as for gzip."""

    def __init__(self, raw, kind: str, name: str):
        self._raw = raw
        self._kind = kind
        self._name = name
        self._label = {CompressionTypes.GZIP: "gzip", CompressionTypes.BZIP2: "bzip2", CompressionTypes.LZMA: "xz/lzma",
                       CompressionTypes.ZSTD: "zstd", CompressionTypes.DEFLATE: "deflate"}.get(kind, str(kind))
        self._decompressor = _decompressor(kind)
        self._started = False        # the current stream has consumed bytes
        self._buffer = b""
        self._position = 0           # decompressed bytes handed out
        self._compressed = 0         # compressed bytes read from `raw`
        self._done = False

    @property
    def compressed_bytes(self) -> int:
        """The compressed bytes read so far (what a progress line can compare with the file's size)."""
        return self._compressed

    def _fail(self, what: str) -> CorruptInput:
        return CorruptInput(f"{self._name}: the {self._label} data {what} after {self._compressed:,} compressed "
                            f"bytes ({self._position + len(self._buffer):,} bytes decompressed); the file is "
                            "truncated or corrupt")

    def _fill(self, wanted: int) -> None:
        pieces = [self._buffer]
        have = len(self._buffer)
        while have < wanted and not self._done:
            chunk = self._raw.read(_RAW_READ)
            if not chunk:
                self._finish()
                break
            self._compressed += len(chunk)
            out = self._feed(chunk)
            pieces.append(out)
            have += len(out)
        self._buffer = b"".join(pieces)

    def _feed(self, chunk: bytes) -> bytes:
        pieces = []
        while chunk:
            if self._decompressor.eof:      # the stream before ended: a new one (concatenated), or padding
                if self._kind == CompressionTypes.GZIP and not chunk.strip(b"\0"):
                    return b"".join(pieces)
                self._decompressor = _decompressor(self._kind)
                self._started = False
            try:
                pieces.append(self._decompressor.decompress(chunk))
            except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as e:
                raise self._fail(f"is corrupt ({e})") from None
            except Exception as e:  # zstandard.ZstdError: the module is imported only for .zst files
                if type(e).__name__ != "ZstdError":
                    raise
                raise self._fail(f"is corrupt ({e})") from None
            self._started = True
            chunk = self._decompressor.unused_data if self._decompressor.eof else b""
        return b"".join(pieces)

    def _finish(self) -> None:
        self._done = True
        if self._started and not self._decompressor.eof:
            raise self._fail("ends before its end-of-stream marker")
        if not self._started and self._compressed == 0:
            return                          # an empty file: no stream, no rows (as an empty CSV)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            while not self._done:
                self._fill(len(self._buffer) + (64 << 20))
            data, self._buffer = self._buffer, b""
        else:
            if len(self._buffer) < n:
                self._fill(n)
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
