"""Helpers for the service tests: encoded images, hostile payloads, raw HTTP."""

import contextlib
import io
import select
import socket
import struct
import zlib
from urllib.parse import urlparse

from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_bomb_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~60-byte PNG whose header declares width x height pixels (10 G by default)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def raw_request(base_url: str, head: bytes, body_chunks=(), *, timeout: float = 10.0) -> bytes:
    """Send a hand-written HTTP/1.1 request; return whatever the server answers.

    Sending stops as soon as the server answers or closes, as a real client would see it.
    """
    url = urlparse(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered (or closed): stop sending, read it
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        with contextlib.suppress(OSError):  # already closed by the server
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            received += data
        return received
