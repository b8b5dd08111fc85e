"""Start-up checks that turn the usual operator mistakes into one clear line.

A node that can't start (port taken, `--host` not on this machine, data dir
unusable or in use, a different `--difficulty` than the data dir holds) raises
`StartupError` before any actor runs; the CLI prints its message on one line and
exits with its `exit_code`, with no traceback (unless `--verbose`).
"""
from __future__ import annotations

import errno
import socket

EXIT_FAILURE = 1
EXIT_USAGE = 2  # the operator asked for something the data dir contradicts


class StartupError(Exception):
    """The node can't start; `str(self)` is the one line to show the operator."""

    exit_code = EXIT_FAILURE


def check_udp_port(bind_host: str, port: int, advertised_host: str | None = None, option: str = "--host") -> None:
    """Bind (and release) the UDP port the node is about to use, to fail with a clear reason.

    Racy by nature (another program may take the port in between), but it turns
    the two usual mistakes into one line: the port is taken (a node is already
    running), or `--host` names an address this machine doesn't have. `option` is
    the flag that named the address (`--bind` when it differs from `--host`).
    """
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise StartupError(f"cannot open a UDP socket: {exc.strerror or exc}") from None
    try:
        sock.bind((bind_host, port))
    except socket.gaierror as exc:
        raise StartupError(f"{option} {advertised_host or bind_host} is not an address: {exc.strerror or exc}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"UDP port {port} is in use on {bind_host} (is another node running?): "
                               f"stop it or pick another --port") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
            raise StartupError(f"{option} {advertised_host or bind_host} is not an address of this machine: "
                               f"use one of its own addresses, or leave {option} out to auto-detect") from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"UDP port {port} on {bind_host} needs privileges: pick a --port above 1023") from None
        raise StartupError(f"cannot bind UDP {bind_host}:{port}: {exc.strerror or exc}") from None
    finally:
        sock.close()


def check_http_port(host: str, port: int) -> None:
    """Bind (and release) the ops HTTP port, as the server will (SO_REUSEADDR), to fail with a clear reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise StartupError(f"cannot open a TCP socket: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1)
    except socket.gaierror as exc:
        raise StartupError(f"--http-host {host} is not an address: {exc.strerror or exc}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"ops HTTP port {port} is in use on {host} (is another node running?): "
                               f"pick another --http-port, or 0 to turn it off") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
            raise StartupError(f"--http-host {host} is not an address of this machine") from None
        raise StartupError(f"ops HTTP cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        sock.close()
