"""`--ray-address auto`: the node finds a head started on this machine with plain `ray start --head`.

Run by tests/ray/test_ray_miners.py inside private network and pid namespaces. The
head writes its address where `auto` looks: `ray_current_cluster` in Ray's default
temp dir, which Ray's own RAY_TMPDIR moves, for the head and the node alike, to a
fresh directory of this scenario (not the machine's /tmp/ray, which another Ray may
use). Token authentication as the README sets it up: `ray get-auth-token --generate`
(the token goes to ~/.ray/auth_token, HOME being a fresh directory here) and
RAY_AUTH_MODE=token for the head and the node; the node's probe must find that a
client without the token is refused. Asserts, and prints one JSON line of what it
measured.
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

from tests.ray.ray_scenario import RAY_BIN, ROOT, all_mining, free_port, get_json, init_then_main, wait_for  # noqa: E402

PROBE_RETRIES = 5


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="raya", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, HOME=str(home), RAY_TMPDIR=str(home), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               PYTHONUNBUFFERED="1")
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)  # `auto` must find the head by itself; the token comes from ~/.ray/auth_token
    measured: dict[str, object] = {}
    node = None
    log = open(home / "node.log", "wb")
    try:
        t0 = time.monotonic()
        subprocess.run([RAY_BIN, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
        assert (home / ".ray" / "auth_token").stat().st_size > 0, "ray get-auth-token --generate wrote no token"
        head = subprocess.run([RAY_BIN, "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                               "--include-dashboard=false", "--disable-usage-stats"],
                              env=env, check=True, capture_output=True, text=True, timeout=120)  # RAY_TMPDIR/ray
        assert "Token authentication is disabled" not in head.stdout + head.stderr, head.stderr[-2000:]
        assert (home / "ray" / "ray_current_cluster").exists(), "the head wrote no address file"
        http_port = free_port()
        # The node's probe (a client without the token) is refused only once Ray's client
        # gives up on the GCS: RAY_NUM_REDIS_GET_RETRIES tries about a second apart (20 by
        # default). Fewer for the node: the cluster refuses it the same, the verdict comes sooner.
        node_env = dict(env, RAY_NUM_REDIS_GET_RETRIES=str(PROBE_RETRIES))
        node = subprocess.Popen(
            [sys.executable, str(ROOT / "run_node.py"), "--host", "127.0.0.1", "--port", str(free_port(socket.SOCK_DGRAM)),
             "--name", "ray-auto", "--difficulty", "30", "--miners", "auto", "--ray-address", "auto",
             "--data-dir", str(home / "data"), "--http-port", str(http_port)],
            env=node_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        found = wait_for("2 miners hashing on the auto-found cluster", lambda: all_mining(http_port, 2), 90)
        log.flush()
        verdict = wait_for("the node's token authentication verdict", lambda: next(
            (line for line in (home / "node.log").read_text().splitlines() if "token authentication" in line), None), 90)
        measured["auth_line"] = verdict.split("node.ray: ")[-1]
        assert "requires token authentication" in verdict, verdict
        measured["miners_up_s"] = round(time.monotonic() - t0, 1)
        assert all(m["backend"] == "ray" and m["ray_node"] == "127.0.0.1" for m in found), found
        assert get_json(http_port, "/health")["status"] == "ok"
        node.send_signal(signal.SIGTERM)
        measured["node_exit"] = node.wait(30)
        assert measured["node_exit"] == 0
        log.flush()
        measured["cluster_line"] = next(line for line in (home / "node.log").read_text().splitlines()
                                        if "Ray cluster at auto" in line).split("node.ray: ")[-1]
        print(json.dumps(measured))
    except BaseException:
        log.flush()
        sys.stderr.write((home / "node.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        if node is not None and node.poll() is None:
            node.kill()
        subprocess.run([RAY_BIN, "stop", "--force"], env=env, capture_output=True, timeout=60)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    init_then_main(main, __file__)
