"""IDX files (the MNIST family's format), gzip-compressed: read with clear errors, and write.

An IDX file is a big-endian header, `0 0 <type code> <ndim>` then one uint32 per dimension, then
the values in C order. Fashion-MNIST's images are type 0x08 (unsigned byte), 3 dimensions
(magic 2051); its labels unsigned bytes in 1 dimension (magic 2049).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from ml.errors import UserError

if TYPE_CHECKING:
    import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
# IDX type code -> numpy dtype (big-endian where it matters).
TYPE_CODES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class IdxError(UserError):
    """A file is not a gzip-compressed IDX file, or its header and contents disagree."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "bad_gzip" or "bad_idx": the validation check it fails


def decompress(raw: bytes, name: str) -> bytes:
    """The gzip payload of `raw`; an IdxError("bad_gzip") saying what is wrong otherwise."""
    if raw[:2] != b"\x1f\x8b":
        raise IdxError(
            "bad_gzip",
            f"{name} is not gzip-compressed (first bytes {raw[:4].hex()}, gzip starts 1f8b); "
            "ingest the official .gz file again",
        )
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise IdxError(
            "bad_gzip", f"{name} is a damaged or truncated gzip file ({exc}); ingest it again"
        ) from exc


def parse(payload: bytes, name: str) -> np.ndarray:
    """The array an uncompressed IDX payload holds; IdxError("bad_idx") when the header is not
    IDX or the data size disagrees with the dimensions it declares."""
    import numpy as np

    if len(payload) < 4:
        raise IdxError("bad_idx", f"{name} is {len(payload)} bytes, too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", payload[:4])
    magic = struct.unpack(">I", payload[:4])[0]
    if zero != 0 or code not in TYPE_CODES or ndim == 0:
        raise IdxError(
            "bad_idx",
            f"{name} has IDX magic {magic} (0x{magic:08x}), not an IDX header (images: "
            f"{IMAGES_MAGIC}, labels: {LABELS_MAGIC}); is it the right file?",
        )
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise IdxError("bad_idx", f"{name}: header declares {ndim} dimensions but is truncated")
    dims = struct.unpack(f">{ndim}I", payload[4:header])
    dtype = np.dtype(TYPE_CODES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(payload) - header
    if actual != expected:
        raise IdxError(
            "bad_idx",
            f"{name}: header declares shape {list(dims)} ({expected} data bytes) but the file "
            f"holds {actual}; the file is truncated or not the one the header describes",
        )
    array = np.frombuffer(payload, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read(path: Path) -> np.ndarray:
    """The array of a gzip-compressed IDX file."""
    return parse(decompress(path.read_bytes(), path.name), path.name)


def encode(array: np.ndarray) -> bytes:
    """`array` as gzip-compressed IDX bytes (the inverse of parse(decompress(...)))."""
    import numpy as np

    array = np.asarray(array)
    codes = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in TYPE_CODES.items()}
    code = codes.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}")
    big = np.dtype(TYPE_CODES[code])
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(big, copy=False).tobytes(), 6, mtime=0)


def write(path: Path, array: np.ndarray) -> None:
    from ml.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(encode(array))
