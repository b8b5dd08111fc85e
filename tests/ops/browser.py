"""Headless Chromium (the system's package) driven by Playwright, kept on loopback.

Playwright talks to the browser over a pipe (no debugging port). The browser
gets a fresh profile and flags that turn off everything that would reach the
network on its own (updates, sync, field trials, QUIC); every request that is
not to loopback goes to a closed port on 127.0.0.1 (a dead proxy; Chromium never
proxies loopback), and host names don't resolve, so a page can't leak traffic
off the machine even if it tried.

Checked with `POW_NODE_CHROMIUM` pointing at a wrapper that runs Chromium under
`strace -f -e trace=socket,connect,sendto,sendmsg,sendmmsg,write`: during the
browser test every connect() is to 127.0.0.1, except Chromium's IPv6
reachability probe, a UDP socket connect()ed to a public address (a route
lookup) on which nothing is ever sent.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Iterator

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
LOOPBACK_ONLY_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=MediaRouter,OptimizationHints,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--metrics-recording-only",
    "--no-pings",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def chromium_path() -> str | None:
    """The system Chromium, or None (the browser tests then skip, saying why)."""
    override = os.environ.get("POW_NODE_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def skip_reason() -> str | None:
    """Why the browser tests can't run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -r requirements.txt)"
    if chromium_path() is None:
        return "no system Chromium (apt-get install chromium; .ci/run installs it)"
    return None


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in a fresh headless Chromium profile; everything is torn down after."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pow-node-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=LOOPBACK_ONLY_ARGS,
                viewport={"width": width, "height": height}, service_workers="block",
            )
            try:
                yield context.pages[0] if context.pages else context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
