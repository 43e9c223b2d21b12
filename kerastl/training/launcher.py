"""`kerastl train --workers N`: N worker processes on this machine, one multi-worker job.

Each worker is `python -m kerastl train ...` with its own TF_CONFIG (the same cluster of
free localhost ports, its own task index) and `distribute.strategy=multi_worker`. Their
output is prefixed with `[worker-i]`; when one fails, the others are stopped and the job
fails with that worker's exit code. On real hosts, run the same command on every host
with TF_CONFIG set by hand (docs/scaling.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def tf_configs(count: int) -> list[dict]:
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(count)]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(count)]


def _pump(stream, prefix: str, echo):
    for line in iter(stream.readline, ""):
        echo(f"{prefix} {line.rstrip()}")
    stream.close()


def worker_command(train_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "kerastl", "train", *train_args]


def launch(count: int, train_args: list[str], echo=print) -> int:
    """Runs `kerastl train *train_args` as `count` workers; returns the job's exit code."""
    procs, pumps = [], []
    for i, conf in enumerate(tf_configs(count)):
        env = dict(os.environ, TF_CONFIG=json.dumps(conf), PYTHONUNBUFFERED="1")
        cmd = worker_command(train_args)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[worker-{i}]", echo), daemon=True)
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    code = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                code = failed[0].returncode
                echo(f"[launcher] worker-{procs.index(failed[0])} exited with {code}; stopping the others")
                break
            time.sleep(0.2)
        else:
            code = next((p.returncode for p in procs if p.returncode), 0)
    except KeyboardInterrupt:
        code = 130
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for t in pumps:
            t.join(timeout=5)
    return code
