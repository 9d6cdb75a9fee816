"""Hostile media files for the tests, built byte by byte: tiny files whose headers claim huge
pictures (decompression bombs)."""

from __future__ import annotations

import struct
import zlib


def forged_png(width: int, height: int) -> bytes:
    """A ~70-byte 8-bit RGB PNG whose IHDR claims ``width x height``; its IDAT holds 64 zero
    bytes, far too few for the claimed size (decoding it would allocate the full picture)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # depth 8, colour type RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def gif_with_screen(width: int, height: int) -> bytes:
    """A 35-byte GIF with a ``width x height`` logical screen and a single 1x1 black frame:
    decoders composite frames onto a screen-sized canvas."""
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)  # no global colour table
    # image descriptor at (0, 0), 1x1, with a 2-colour local table (black, white)
    out += b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0x80) + b"\x00\x00\x00\xff\xff\xff"
    out += b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2; one sub-block: clear, 0, end
    return out + b";"
