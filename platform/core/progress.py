"""Training progress without coupling: a loop calls :func:`update` after each epoch, round or
episode; whoever wants to see it (the CLI's progress bar, a test) installs a listener with
:func:`listen`. With no listener an update costs one check of an empty list."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: ``(unit, done, total, metrics)``; unit is e.g. "epoch", "round", "episode".
Listener = Callable[[str, int, int, dict[str, float]], None]
_listeners: list[Listener] = []


def update(unit: str, done: int, total: int, **metrics: float) -> None:
    """Report that ``done`` of ``total`` units have finished (optional numbers to show)."""
    for listener in _listeners:
        listener(unit, done, total, metrics)


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Send every :func:`update` in this process to ``listener`` for the duration of the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
