"""A Ray cluster WITHOUT token authentication: the node must say so, in one WARNING line.

Run by tests/ray/test_ray_miners.py inside private network and pid namespaces. The
head is started as Ray 2.60 starts it when nobody asks for tokens (no
RAY_AUTH_MODE, no token anywhere: Ray itself then warns that token authentication
is disabled); the node joins it with `--miners 1 --ray-address HOST:PORT` and its
probe, a client without any token that the cluster lets in, must make it log
exactly one WARNING naming the missing token authentication. Asserts, and prints
one JSON line of what it measured.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.ray.ray_scenario import RAY_BIN, ROOT, free_port, init_then_main, wait_for  # noqa: E402

WARNING_TEXT = "has no token authentication"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="rayo", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    (work / "home").mkdir()
    env = dict(os.environ, HOME=str(work / "home"), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(key, None)
    gcs_port = free_port()
    address = f"127.0.0.1:{gcs_port}"
    measured: dict[str, object] = {}
    node = None
    log = open(work / "node.log", "wb")
    try:
        start = [RAY_BIN, "start", "--head", "--num-cpus=1", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
                 "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={work / 'ray'}"]
        head = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        if head.returncode != 0:  # Ray's own start-up can give up on a very busy machine: once more, from clean
            sys.stderr.write(f"ray start --head failed, retrying once: {head.stderr[-2000:]}\n")
            subprocess.run([RAY_BIN, "stop", "--force"], env=env, capture_output=True, timeout=60)
            head = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert head.returncode == 0, f"ray start --head failed: {head.stderr[-3000:]}"
        assert "Token authentication is disabled" in head.stdout + head.stderr, "expected an open cluster"
        node = subprocess.Popen(
            [sys.executable, str(ROOT / "run_node.py"), "--host", "127.0.0.1", "--port", str(free_port(socket.SOCK_DGRAM)),
             "--name", "ray-open", "--difficulty", "30", "--miners", "1", "--ray-address", address,
             "--data-dir", str(work / "data"), "--http-port", "0"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        t0 = time.monotonic()
        line = wait_for("the node's warning about the open cluster", lambda: next(
            (x for x in (work / "node.log").read_text().splitlines() if WARNING_TEXT in x), None), 90)
        measured["warned_after_s"] = round(time.monotonic() - t0, 1)
        measured["warning"] = line.split("node.ray: ")[-1]
        assert " WARNING " in f" {line} ", line
        node.send_signal(signal.SIGTERM)
        measured["node_exit"] = node.wait(60)
        text = (work / "node.log").read_text()
        measured["warning_lines"] = sum(1 for x in text.splitlines() if WARNING_TEXT in x)
        assert measured["warning_lines"] == 1, text[-4000:]
        assert "InvalidAuthToken" not in text and "gcs_client.cc" not in text  # the probe's Ray output stays out
        print(json.dumps(measured))
    except BaseException:
        log.flush()
        sys.stderr.write((work / "node.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        if node is not None and node.poll() is None:
            node.kill()
        subprocess.run([RAY_BIN, "stop", "--force"], env=env, capture_output=True, timeout=60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    init_then_main(main, __file__)
