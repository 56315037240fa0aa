"""Opening input files: every byte a loader reads, packed or not, passes one size limit.

The size check in `validate.check_file` sees only the bytes on disk, and a `.gz` of a few
megabytes can unpack to gigabytes (a decompression bomb). So a `.gz` is read through a counting
reader that raises a `DataError` the moment the unpacked bytes pass the limit, before they are
held in memory; and a `.gz` that is not gzip, or ends early, becomes the same kind of one-line
error naming the file instead of a traceback (an `EOFError` would even be taken by the command
line for Ctrl-D and reported as "Aborted.").
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import BinaryIO, TextIO

from trafficcore import config
from trafficcore.errors import DataError

#: Bytes read per step; also the most a bounded read can overshoot the limit by before it stops.
CHUNK = 1 << 20


def is_gzip(path: str | Path) -> bool:
    """Files named `*.gz` are gunzipped on the fly (the name is what the formats document)."""
    return Path(path).name.lower().endswith(".gz")


class BoundedReader(io.BufferedIOBase):
    """A binary stream that raises `DataError` once more than `limit` bytes have come out of `inner`.

    Gzip faults met while reading (not gzip, corrupt, truncated) are raised as `DataError` too.
    """

    def __init__(self, inner: BinaryIO, path: Path, limit: int):
        super().__init__()
        self._inner = inner
        self._path = path
        self._limit = limit
        self.seen = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # "everything" still arrives in steps, so the limit stops it early
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        # one byte past the limit is enough to know it is passed
        want = min(size, self._limit + 1 - self.seen)
        if want <= 0:
            self._over()
        try:
            data = self._inner.read(want)
        except EOFError:
            raise DataError(str(self._path), "the gzip data is truncated (the file ends before its data)") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as e:
            raise DataError(str(self._path), f"not a valid gzip file ({_first_line(e)})") from None
        self.seen += len(data)
        if self.seen > self._limit:
            self._over()
        return data

    read1 = read

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def _over(self) -> None:
        mb = self._limit / 2**20
        raise DataError(
            str(self._path),
            f"unpacks to more than the {mb:.1f} MB limit (raise it with TRAFFICCORE_MAX_FILE_MB)",
        )

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def open_binary(path: str | Path, limit: int | None = None) -> BinaryIO:
    """A buffered binary handle on the file's content, gunzipped and bounded when it is a `.gz`."""
    p = Path(path)
    if not is_gzip(p):
        return open(p, "rb")
    bound = config.max_file_bytes() if limit is None else limit
    return BoundedReader(gzip.GzipFile(p, "rb"), p, bound)


def open_text(path: str | Path, limit: int | None = None) -> TextIO:
    """A UTF-8 text handle (BOM allowed; newlines left to the csv reader) over `open_binary`."""
    return io.TextIOWrapper(open_binary(path, limit), encoding="utf-8-sig", newline="")


def read_bytes(path: str | Path, limit: int | None = None) -> bytearray:
    """The whole (unpacked) content, read in chunks so a bomb is stopped at the limit, not after it."""
    out = bytearray()
    with open_binary(path, limit) as f:
        while chunk := f.read(CHUNK):
            out += chunk
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_unpacked(path: str | Path, limit: int | None = None) -> None:
    """Unpack a `.gz` once, keeping nothing, so a bomb or a broken stream is refused before a parser starts.

    A parser handed the stream would stop at the limit too, but only after parsing everything up
    to it (seconds for a 200 MB limit); this pass costs a fraction of a second for real files.
    """
    if not is_gzip(path):
        return
    with open_binary(path, limit) as f:
        while f.read(CHUNK):
            pass
