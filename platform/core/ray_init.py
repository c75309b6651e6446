"""Starting Ray the one way rlad does it: always with an explicit CPU count."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any, Iterator

import ray

from rlad.core.errors import UserError
from rlad.core.verbosity import is_quiet

# AF_UNIX socket paths hold at most 107 bytes; Ray puts its sockets at
# <root>/session_<date>_<time>_<micros>_<pid>/sockets/plasma_store (about 70 bytes below <root>).
SOCKET_PATH_MAX, SESSION_TAIL = 107, 72


def local_temp_dir() -> str | None:
    """A short Ray root (``/tmp/rlad-ray-<uid>``) when the one Ray would pick from ``TMPDIR`` is too
    long for its sockets; None when Ray's own choice fits. ``RAY_TMPDIR`` is the user's to set."""
    from ray._common.utils import get_default_ray_temp_dir

    if "RAY_TMPDIR" in os.environ or len(get_default_ray_temp_dir()) + SESSION_TAIL <= SOCKET_PATH_MAX:
        return None
    if not os.access("/tmp", os.W_OK):
        raise UserError(f"the temporary folder {os.environ.get('TMPDIR')!r} is too long for Ray's sockets "
                        f"({SOCKET_PATH_MAX} bytes) and /tmp is not writable: set RAY_TMPDIR to a short folder")
    return f"/tmp/rlad-ray-{os.getuid()}"


#: the one line Ray's C++ logger prints at INFO when it reads RAY_BACKEND_LOG_LEVEL (logging.cc), before it
#: applies the level that quiet mode sets there: with that level it would be the only backend line users see
BACKEND_BANNER = b"Set ray log level from environment variable"


@contextlib.contextmanager
def _without_backend_banner() -> Iterator[None]:
    """Route this process's stderr (fd 2) through a pipe while Ray starts, and forward every line but
    :data:`BACKEND_BANNER`'s. Processes Ray starts meanwhile keep the pipe as their stderr, so the
    forwarding thread lives on (a daemon) and nothing they write later is lost."""
    read, write = os.pipe()
    saved = os.dup(2)

    def forward() -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                if BACKEND_BANNER not in line:
                    os.write(saved, line)

    threading.Thread(target=forward, name="rlad-stderr", daemon=True).start()
    os.dup2(write, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(write)


def init_ray(num_cpus: int | None = None, address: str | None = None, **kwargs: Any) -> None:
    """Connect to ``address`` (a running cluster, e.g. ``"auto"``) or start a local Ray with
    ``num_cpus`` CPUs (default: all cores). No-op when Ray is already initialised. In quiet mode
    (:mod:`rlad.core.verbosity`) worker logs stay on the workers and Ray logs errors only."""
    if ray.is_initialized():
        return
    quiet = is_quiet()
    if quiet:
        kwargs = {"log_to_driver": False, "logging_level": logging.ERROR, **kwargs}
    if address is None:
        if "_temp_dir" not in kwargs and (short := local_temp_dir()) is not None:
            kwargs["_temp_dir"] = short
        # address="local": always a new local instance, never a cluster that happens to be running.
        kwargs = {"address": "local", "num_cpus": num_cpus or os.cpu_count(), "include_dashboard": False, **kwargs}
    else:
        kwargs["address"] = address
    with _without_backend_banner() if quiet else contextlib.nullcontext():
        ray.init(**kwargs)
