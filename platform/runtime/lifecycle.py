"""Graceful shutdown of ``rlad serve``: SIGTERM (systemd, Docker, Kubernetes) and SIGINT (Ctrl-C).

On either signal the driver asks the HTTP ingress to *drain*: from then on every new request is
answered 503 (``Retry-After``, ``Connection: close``) while the requests already accepted run to
their answer; once none is in flight (or ``DRAIN_S`` has passed) the app and Ray are shut down and
the process exits 0 after SIGTERM, 130 after SIGINT, within ``EXIT_S`` seconds and with no Ray
stack dump (its own SIGTERM handler is replaced). A watchdog ends the process with the same code
if Ray hangs in its shutdown.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

EXIT_CODES = {signal.SIGTERM: 0, signal.SIGINT: 130}
DRAIN_S = 6.0  # longest wait for in-flight requests
GRACE_S = 0.5  # 503s keep coming this long after the drain, before the port closes
EXIT_S = 9.5  # the watchdog's deadline, from the signal


@dataclass
class Drain:
    """The ingress's side: a draining flag and the requests in flight (one ingress per process)."""

    draining: bool = False
    in_flight: int = 0

    async def wait(self, timeout: float = DRAIN_S) -> int:
        """Refuse new requests, wait for the accepted ones; returns how many are still running."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.in_flight


class SignalWaiter:
    """Replaces Ray's SIGTERM handler and Python's SIGINT one: the main thread waits for either."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._event = threading.Event()
        for sig in EXIT_CODES:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
            self._event.set()

    def wait(self) -> int:
        while not self._event.wait(3600):
            pass
        return self.received


def shut_down(signum: int, app_name: str, local: bool, log=print) -> None:
    """Drain the app, stop it (and the local Ray), then end the process with the signal's code."""
    code = EXIT_CODES.get(signum, 0)
    started = time.monotonic()

    def force() -> None:
        log(f"[serve] shutdown took over {EXIT_S:.0f} s: exiting now")
        _exit(code)

    watchdog = threading.Timer(EXIT_S, force)
    watchdog.daemon = True
    watchdog.start()
    from ray import serve

    name = signal.Signals(signum).name
    log(f"[serve] {name}: refusing new requests (503), draining those in flight")
    try:
        left = serve.get_deployment_handle("ScoringAPI", app_name=app_name).drain.remote(DRAIN_S).result(timeout_s=DRAIN_S + 2)
        if left:
            log(f"[serve] {left} requests still running after {DRAIN_S:.0f} s")
        time.sleep(GRACE_S)
    except Exception as exc:  # noqa: BLE001 - the app may already be gone; shut down anyway
        log(f"[serve] draining failed ({type(exc).__name__}: {exc}); stopping")
    try:
        if local:
            import ray

            ray.shutdown()
        else:  # a cluster we joined keeps running; only our app goes
            serve.delete(app_name)
    except Exception as exc:  # noqa: BLE001
        log(f"[serve] shutdown: {type(exc).__name__}: {exc}")
    log(f"[serve] stopped after {time.monotonic() - started:.1f} s ({name}, exit {code})")
    _exit(code)


def _exit(code: int) -> None:
    """Leave now: atexit hooks (Ray's included) already ran their part or would hang."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
