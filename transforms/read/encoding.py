"""A text input's encoding: the byte-order mark at its start, else the configured one
(`csv.encoding` / `jsonl.encoding`), else UTF-8. A file that is not UTF-8 is transcoded to
UTF-8 as it is read, before it is cut into blocks, so everything after (blocks, the CSV
and JSON parsers, `_row`) sees UTF-8; a UTF-8 file is read as it is, with no extra work
(its BOM is skipped by `line_blocks_at`).

Bytes that are not valid in the file's encoding (a lone UTF-16 surrogate, an odd last
byte, one of the five bytes cp1252 leaves undefined) become bytes that are not UTF-8, so
their record is quarantined (`invalid_utf8`) as a broken UTF-8 record is; a byte from 0x80
keeps its value there (`\\xNN` in the quarantined text), one below it shows as 0x80 + it.
"""

import codecs
from typing import Optional, Tuple

UTF8 = "utf-8"
# longest first: UTF-32 LE's mark begins with UTF-16 LE's
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, UTF8),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_ERRORS = "dataprep.undecodable"
_READ = 8 << 20


def _undecodable(e: UnicodeDecodeError) -> Tuple[str, int]:
    """Each byte that does not decode as the surrogate `surrogateescape` writes back as a byte
    from 0x80 up: not UTF-8, so its record is quarantined as `invalid_utf8`."""
    return "".join(chr(0xDC80 | b) for b in e.object[e.start:e.end]), e.end


codecs.register_error(_ERRORS, _undecodable)


def canonical(encoding: Optional[str]) -> str:
    """Python's name of a text encoding (`latin-1` → `iso8859-1`; None, `utf8`, `utf-8-sig` → `utf-8`).

    Raises:
      LookupError: not a text encoding Python knows.
    """
    if not encoding:
        return UTF8
    info = codecs.lookup(encoding)
    if not getattr(info, "_is_text_encoding", True):     # base64, rot13, zlib: bytes to bytes
        raise LookupError(f"{encoding!r} is not a text encoding")
    return UTF8 if info.name in ("utf-8", "utf-8-sig") else info.name


def sniff_bom(head: bytes) -> Tuple[Optional[str], int]:
    """(the encoding a byte-order mark at the start of `head` names, its length), or (None, 0)."""
    for mark, name in _BOMS:
        if head.startswith(mark):
            return name, len(mark)
    return None, 0


def text_encoding(head: bytes, configured: Optional[str]) -> Tuple[str, int]:
    """(the file's encoding, the bytes of its BOM to skip): a BOM decides, else `configured`,
    else UTF-8. A UTF-8 BOM is not skipped here (`line_blocks_at` skips it)."""
    found, length = sniff_bom(head)
    if found == UTF8:
        return UTF8, 0
    if found:
        return found, length
    return canonical(configured), 0


def as_utf8(f, configured: Optional[str]) -> Tuple[object, bool]:
    """`f` (open at the start of a text file) as a file object of UTF-8 bytes, and whether it
    is transcoded. Reads the first 4 bytes to look for a BOM; a UTF-8 file comes back as
    its own bytes (those 4 first, then `f`'s reads: no copy, no decoding)."""
    head = b""
    while len(head) < 4:
        more = f.read(4 - len(head))
        if not more:
            break
        head += more
    encoding, skip = text_encoding(head, configured)
    if encoding == UTF8:
        return _Prefixed(head, f), False
    return _Transcoded(head[skip:], f, encoding), True


class _Prefixed:
    """`head`, then the rest of `f`. The first read returns all of `head` (at most 4 bytes,
    even past `n`), so a UTF-8 BOM is never cut in two."""

    def __init__(self, head: bytes, f):
        self._head = head
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._f.read(n)
        head, self._head = self._head, b""
        return head + self._f.read(-1 if n is None or n < 0 else max(n - len(head), 0))


class _Transcoded:
    """The bytes of `f` (in `encoding`, from after its BOM) decoded and written back as UTF-8.
    A read returns about `n` source bytes' worth, more or fewer UTF-8 bytes."""

    def __init__(self, head: bytes, f, encoding: str):
        self._pending = head
        self._f = f
        self._decoder = codecs.getincrementaldecoder(encoding)(_ERRORS)
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(_READ), b""))
        while not self._eof:
            raw = self._pending + self._f.read(max(n - len(self._pending), 1))
            self._pending = b""
            if not raw:
                self._eof = True
                text = self._decoder.decode(b"", final=True)
            else:
                text = self._decoder.decode(raw)
            if text:
                return text.encode(UTF8, "surrogateescape")
        return b""
