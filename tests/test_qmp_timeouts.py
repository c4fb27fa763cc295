"""A QMP socket that accepts and never answers, or greets and then goes silent, ends
with one line and exit 6 within the time limits, never a hang."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time


def _server(path, greet: bool, stop: threading.Event) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(4)
    srv.settimeout(0.2)

    def run():
        conns = []
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(c)
            if greet:
                c.sendall(json.dumps({"QMP": {"version": {}, "capabilities": []}}).encode() + b"\r\n")
        for c in conns:
            c.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_silent_qmp_socket_exits_6_quickly(tmp_path):
    stop = threading.Event()
    sock = tmp_path / "qmp.sock"
    _server(sock, greet=False, stop=stop)
    try:
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "dumpkit.cli", "info", f"qmp:{sock}"], capture_output=True,
                           text=True, timeout=60)
        assert time.monotonic() - t < 30
        assert r.returncode == 6 and "no QMP answer within" in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.count("\n") == 1
    finally:
        stop.set()


def test_qmp_monitor_that_greets_then_goes_silent_exits_6(tmp_path):
    stop = threading.Event()
    sock = tmp_path / "qmp.sock"
    _server(sock, greet=True, stop=stop)
    try:
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "dumpkit.cli", "pci", f"qmp:{sock}"], capture_output=True,
                           text=True, timeout=60)
        assert time.monotonic() - t < 30
        assert r.returncode == 6 and "no QMP answer within" in r.stderr and "Traceback" not in r.stderr
    finally:
        stop.set()
