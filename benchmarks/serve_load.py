"""Load check for ``ldmdetect serve``: bounded concurrent requests, hostile ones mixed in.

Starts the server in a subprocess on loopback with a small detector (random weights, thresholds
calibrated on the bundled photos: the point is the service, not the verdicts), fires
``--requests`` requests with ``--concurrency`` in flight, and prints JSON: requests/s, latency
percentiles, counts by status and by kind, and the server's peak RSS. Every request must get an
answer (200, 4xx for bad input, 503 when over the concurrency cap); anything else is counted
under "client_errors". Stops by itself after ``--max-seconds`` at most.

    python benchmarks/serve_load.py                       # 400 requests, 16 in flight
    python benchmarks/serve_load.py --requests 2000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

KINDS = (
    ("good", 60),
    ("batch4", 10),
    ("oversized_content_length", 6),
    ("chunked_oversized", 6),
    ("bomb_header", 6),
    ("wrong_magic", 6),
    ("truncated", 6),
)


def build_detector(directory: Path, backbone: str, input_size: int) -> Path:
    """Random-weight detector whose thresholds are quantiles of its scores on real photos."""
    import torch

    from ldmdetect.config import DetectorConfig
    from ldmdetect.detector import Detector
    from ldmdetect.io.images import load_image
    from ldmdetect.io.samples import sample_photos
    from ldmdetect.methods import get

    torch.manual_seed(0)
    config = DetectorConfig(backbone=backbone, input_size=input_size)
    detector = Detector(config, get(config.method).build_model(config), device="cpu")
    photos = [load_image(path) for _, path in sample_photos()]
    scores = detector.decision_function(photos, tries=8)
    quantiles = {f"fpr_{f:g}": float(np.quantile(scores, 1 - f)) for f in (0.001, 0.01, 0.05)}
    config = dataclasses.replace(config, thresholds={"0.5": 0.5} | quantiles)
    return Detector(config, detector.model, device="cpu").save_pretrained(directory)


def photo_jpegs(count: int, side: int) -> list[bytes]:
    from ldmdetect.io.images import load_image
    from ldmdetect.io.samples import sample_photos

    out = []
    for _, path in sample_photos()[:count]:
        image = load_image(path)
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def png_bomb_header(width: int = 100_000, height: int = 100_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_forever(args: argparse.Namespace) -> None:
    """The server process: the same app the CLI serves, with this run's limits."""
    import torch

    from ldmdetect.detector import Detector
    from ldmdetect.memory import keep_freed_memory
    from ldmdetect.serve import create_app, run_server

    keep_freed_memory()  # as the ``ldmdetect`` command does (LDMDETECT_KEEP_FREED_MEMORY=0: off)
    torch.set_num_threads(args.threads)
    detector = Detector.from_pretrained(args.detector_dir, device=args.device)
    app = create_app(
        detector,
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        max_concurrency=args.max_concurrency,
        detector_id="serve-load",
    )
    run_server(app, host="127.0.0.1", port=args.port)


async def raw_exchange(port: int, head: bytes, body_chunks, timeout: float) -> int:
    """Send a hand-written request (stop sending once the server answers); return the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        status_line = asyncio.ensure_future(reader.readline())
        for chunk in body_chunks:
            if status_line.done():
                break
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), timeout)
            except (ConnectionError, asyncio.TimeoutError):
                break
        line = await asyncio.wait_for(status_line, timeout)
        return int(line.split(b" ", 2)[1])
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def one_request(
    kind: str, i: int, http: httpx.AsyncClient, port: int, photos: list[bytes], limit: int
) -> int:
    photo = photos[i % len(photos)]
    if kind == "good":
        response = await http.post("/v1/detect", files={"file": ("p.jpg", photo, "image/jpeg")})
        return response.status_code
    if kind == "batch4":
        parts = [
            ("files", (f"{j}.jpg", photos[(i + j) % len(photos)], "image/jpeg")) for j in range(4)
        ]
        response = await http.post("/v1/detect/batch", files=parts)
        return response.status_code
    if kind == "bomb_header":
        files = {"file": ("b.png", png_bomb_header(), "image/png")}
        return (await http.post("/v1/detect", files=files)).status_code
    if kind == "wrong_magic":
        files = {"file": ("x.jpg", b"%PDF-1.7\n" + bytes(4000), "image/jpeg")}
        return (await http.post("/v1/detect", files=files)).status_code
    if kind == "truncated":
        files = {"file": ("t.jpg", photo[: len(photo) // 2], "image/jpeg")}
        return (await http.post("/v1/detect", files=files)).status_code
    multipart = b"Content-Type: multipart/form-data; boundary=b\r\n"
    if kind == "oversized_content_length":
        head = b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n" + multipart
        head += b"Content-Length: %d\r\n\r\n" % (limit * 4)
        chunks = (bytes(64 * 1024) for _ in range(limit * 4 // (64 * 1024)))
        return await raw_exchange(port, head, chunks, timeout=30)
    if kind == "chunked_oversized":
        head = b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n" + multipart
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        # A well-formed start (so only the byte count can stop it), then zeros without end.
        first = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        first += b"\xff\xd8\xff"
        piece = bytes(64 * 1024)
        chunks = itertools.chain(
            [b"%x\r\n%s\r\n" % (len(first), first)],
            (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(limit * 4 // len(piece))),
        )
        return await raw_exchange(port, head, chunks, timeout=30)
    raise ValueError(kind)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # the kernel's high-water mark of resident memory
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_sampler(pid: int, samples: list[float], stop: threading.Event) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            samples.append(process.memory_info().rss / 2**20)
        except psutil.Error:
            return
        stop.wait(0.05)


async def drive(args: argparse.Namespace, port: int, photos: list[bytes]) -> dict:
    weights = np.array([w for _, w in KINDS], dtype=float)
    rng = np.random.default_rng(0)
    kinds = [
        KINDS[k][0] for k in rng.choice(len(KINDS), size=args.requests, p=weights / weights.sum())
    ]
    semaphore = asyncio.Semaphore(args.concurrency)
    latencies: dict[str, list[float]] = {k: [] for k, _ in KINDS}
    statuses: Counter = Counter()
    by_kind: dict[str, Counter] = {k: Counter() for k, _ in KINDS}
    limits = httpx.Limits(max_connections=args.concurrency)
    timeout = httpx.Timeout(60.0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout
    ) as http:

        async def task(i: int, kind: str) -> None:
            async with semaphore:
                start = time.perf_counter()
                try:
                    status = str(
                        await one_request(kind, i, http, port, photos, args.max_body_bytes)
                    )
                except Exception as err:  # a request without an answer is what this check counts
                    status = f"client_error:{type(err).__name__}"
                latencies[kind].append(time.perf_counter() - start)
                statuses[status] += 1
                by_kind[kind][status] += 1

        start = time.perf_counter()
        await asyncio.gather(*(task(i, kind) for i, kind in enumerate(kinds)))
        elapsed = time.perf_counter() - start
        health = (await http.get("/healthz")).json()

    every = np.array([x for values in latencies.values() for x in values]) * 1000
    good = np.array(latencies["good"]) * 1000
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(args.requests / elapsed, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(every, 50)), 1),
            "p99": round(float(np.percentile(every, 99)), 1),
            "good_p50": round(float(np.percentile(good, 50)), 1) if good.size else None,
            "good_p99": round(float(np.percentile(good, 99)), 1) if good.size else None,
        },
        "status_counts": dict(sorted(statuses.items())),
        "status_by_kind": {k: dict(sorted(c.items())) for k, c in by_kind.items()},
        "client_errors": sum(n for s, n in statuses.items() if s.startswith("client_error")),
        "server_alive_after": health.get("status") == "ok",
        "device_batches_run": health.get("batches_run"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="hard wall-clock cap")
    parser.add_argument("--backbone", default="mobilenetv3_small_050")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--photo-side", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--detector-dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_forever(args)
        return

    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory() as tmp:
        detector_dir = build_detector(Path(tmp) / "detector", args.backbone, args.input_size)
        photos = photo_jpegs(8, args.photo_side)
        port = free_port()
        command = [sys.executable, __file__, "--serve", "--detector-dir", str(detector_dir)]
        command += ["--port", str(port), "--threads", str(args.threads), "--device", args.device]
        command += ["--max-body-bytes", str(args.max_body_bytes)]
        command += ["--max-batch", str(args.max_batch)]
        command += ["--max-concurrency", str(args.max_concurrency)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stop, samples = threading.Event(), []
        try:
            while True:
                if server.poll() is not None:
                    raise RuntimeError("server exited: " + server.stderr.read().decode()[-2000:])
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not start before --max-seconds")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            idle_rss = peak_rss_mb(server.pid)
            sampler = threading.Thread(target=rss_sampler, args=(server.pid, samples, stop))
            sampler.start()
            remaining = deadline - time.monotonic()
            result = asyncio.run(asyncio.wait_for(drive(args, port, photos), remaining))
            result["server_exit_code_during_run"] = server.poll()
            result["server_rss_mb"] = {
                "after_start": idle_rss,
                "peak": peak_rss_mb(server.pid) or (max(samples) if samples else None),
            }
        finally:
            stop.set()
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    result["setup"] = {
        "backbone": args.backbone,
        "input_size": args.input_size,
        "photo_side": args.photo_side,
        "server_torch_threads": args.threads,
        "limits": {
            "max_body_bytes": args.max_body_bytes,
            "max_batch": args.max_batch,
            "max_concurrency": args.max_concurrency,
        },
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
