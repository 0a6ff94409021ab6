"""`make lab` brings up a JupyterLab server on the course that answers HTTP (on loopback only)."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_make_lab_serves_the_course():
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.skip("make lab is tested where make set up .venv")
    port, token = _free_port(), "course-test-token"
    args = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.token={token}"
    process = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and body is None:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            try:
                url = f"http://127.0.0.1:{port}/api/contents/notebooks?token={token}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert body is not None, "JupyterLab did not answer within 60 s"
        assert "00_welcome.ipynb" in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as response:
            page = response.read().decode()
            assert response.status == 200 and "JupyterLab" in page
        # students never see nbgrader's instructor menus (etc/jupyter/labconfig/page_config.json)
        config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))
        assert "@jupyter/nbgrader" in config["disabledExtensions"], config["disabledExtensions"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
