"""The served model follows the registry: each Serve replica polls the live version and hot-swaps.

A promotion or rollback (``rlad retrain``, ``rlad models promote|rollback``) is one committed write
to the registry's ``live`` pointer in ``rlad.db``; it needs no connection to the Ray cluster that
serves. Every :class:`~rlad.platform.runtime.serving.DetectorServer` replica started with a
working folder runs a :class:`LiveVersionPoller`: every ``interval`` seconds it reads the pointer,
and on a change it loads the new checkpoint *beside* the serving model and then swaps the
reference, so requests already running finish on the old model and none fails. A checkpoint that
does not load is skipped (the old model keeps serving) and not retried until the pointer moves.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from rlad.platform.runtime.feedback import open_db
from rlad.platform.runtime.model_registry import SCHEMA, live_checkpoint

logger = logging.getLogger("ray.serve")

POLL_INTERVAL_S = 0.25


class LiveVersionPoller:
    """Background thread: ``swap(detector, version)`` whenever the registry's live version changes."""

    def __init__(self, workdir: str | Path, load: Callable[[str], Any], swap: Callable[[Any, int], None],
                 current: int, interval: float = POLL_INTERVAL_S) -> None:
        self.load, self.swap, self.current, self.interval = load, swap, current, interval
        self.conn = open_db(workdir, synchronous="NORMAL")
        self.conn.executescript(SCHEMA)
        self._failed: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlad-live-version", daemon=True)
        self._thread.start()

    def poll_once(self) -> None:
        live = live_checkpoint(self.conn)
        if live is None or live[0] in (self.current, self._failed):
            return
        version, checkpoint = live
        try:
            detector = self.load(checkpoint)  # built first: a failure keeps the old model serving
        except Exception as exc:  # noqa: BLE001 - any defect of the file; the old model keeps serving
            self._failed = version
            logger.error("live version %s (%s) does not load, still serving %s: %s", version, checkpoint, self.current, exc)
            return
        self.swap(detector, version)
        self.current, self._failed = version, None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - a locked or missing database: try again next poll
                logger.warning("polling the live version failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
