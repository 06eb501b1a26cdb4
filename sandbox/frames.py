"""Length-prefixed JSON frames over raw file descriptors (no buffering, so nothing is read ahead)."""

from __future__ import annotations

import json
import os
import struct

HEADER = struct.Struct(">I")


class FrameTooLarge(ValueError):
    pass


def read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = 64 << 20):
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > limit:
        raise FrameTooLarge(f"message of {size} bytes exceeds the {limit}-byte limit")
    body = read_exact(fd, size)
    return None if body is None else json.loads(body)


def encode_frame(obj) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def write_frame(fd: int, obj) -> None:
    data = memoryview(encode_frame(obj))
    while data:
        data = data[os.write(fd, data):]
