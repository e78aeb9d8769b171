"""Is the network there? A quick probe, so that a missing weight file fails in seconds offline.

Without it, an offline machine spends most of a minute in huggingface_hub's and carvekit's retry
loops (with a "Retrying in Ns" line each) before the weights error that was certain from the start.
The probe opens one TCP connection per host (3 s at most, answers cached for the process). Behind a
proxy (``HTTPS_PROXY``/``ALL_PROXY``) a direct connection proves nothing, so the probe says
"reachable" and the downloaders' own handling applies.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Iterable, Optional
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline_requested() -> bool:
    """True when ``--offline`` or ``HF_HUB_OFFLINE=1`` forbids every download."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def go_offline() -> None:
    """``--offline``: no download is attempted, by img2mesh or by huggingface_hub/transformers."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:  # huggingface_hub reads the variable when it is imported; tell it if that already happened
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


@functools.lru_cache(maxsize=None)
def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:  # no DNS, no route, refused, timed out
        return False


def unreachable(urls: Iterable[str]) -> Optional[str]:
    """None when any of ``urls``' hosts answers (or a proxy is set), else why, in words."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    hosts = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.hostname is None:
            continue
        port = parsed.port or (80 if parsed.scheme == "http" else 443)
        if _connects(parsed.hostname, port):
            return None
        hosts.append(parsed.hostname)
    return f"no network: {', '.join(dict.fromkeys(hosts))} cannot be reached" if hosts else None
