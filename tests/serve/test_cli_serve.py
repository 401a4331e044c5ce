"""``ldmdetect serve``: the command starts the service on loopback and takes its token."""

import os
import socket
import subprocess
import sys
import time

import httpx
from serve_helpers import encode
from typer.testing import CliRunner

from ldmdetect.cli import app


def test_serve_refuses_a_missing_detector_with_one_line(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--detector", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "cannot load a detector" in result.output and "no such directory" in result.output
    assert "Traceback" not in result.output


def test_serve_runs_the_service_with_the_token_from_the_environment(detector_dir, tmp_path):
    from PIL import Image

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "LDMDETECT_SERVE_TOKEN": "env-token", "LDMDETECT_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ldmdetect.cli", "serve", "--detector", str(detector_dir)]
    command += ["--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        image = encode(Image.new("RGB", (96, 96), (90, 60, 30)))
        files = {"file": ("a.png", image, "image/png")}
        assert httpx.post(base + "/v1/detect", files=files).status_code == 401
        good = httpx.post(
            base + "/v1/detect", files=files, headers={"Authorization": "Bearer env-token"}
        )
        assert good.status_code == 200, good.text
        assert good.json()["detector"] == str(detector_dir)
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0].decode()
    assert f"http://127.0.0.1:{port}" in output
