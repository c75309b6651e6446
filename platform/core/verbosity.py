"""How loud a command is. Commands are quiet by default: the user sees rlad's own progress and
results (printed), not Ray's INFO lines, deprecation warnings or worker log prefixes; ``--verbose``
(or ``quiet(False)``) brings them back. Library users who never call :func:`quiet` keep the
defaults of Ray and Python."""
from __future__ import annotations

import logging
import os
import warnings

_quiet = False
# Tune's default ("new") console output prints its configuration box, "View detailed results" and a
# TensorBoard hint with print(), whatever RunConfig.verbose says; its legacy output at verbose=0
# prints nothing (the env var is read when Tuner.fit starts).
_TUNE_OUTPUT = "RAY_AIR_NEW_OUTPUT"
_set_tune_output = False
# Ray's C++ backend (core_worker.cc, raylet) writes its own ERROR/WARNING lines to the driver's
# stderr, past Python logging. The one users saw from ``rlad swift-hydra`` ("actor constructor
# arguments ... in the object store ... max_restarts", ray issue #53727) comes from RLlib's
# EnvRunnerGroup, which puts its config in the object store for restartable env runners: not ours
# to fix, so quiet mode routes the backend's log lines below FATAL away (read when Ray starts).
_BACKEND_LOG = "RAY_BACKEND_LOG_LEVEL"
_set_backend_log = False


def quiet(enabled: bool = True) -> None:
    """Silence (or not) every log record below ERROR, every Python warning and Tune's console
    boxes in this process; Ray workers started afterwards by ``init_ray`` keep their logs to
    themselves. A process-wide switch, since Ray, RLlib and Serve reset their own loggers'
    levels when they start."""
    global _quiet, _set_tune_output, _set_backend_log
    _quiet = enabled
    logging.disable(logging.WARNING if enabled else logging.NOTSET)
    if enabled:
        warnings.filterwarnings("ignore")
        if _TUNE_OUTPUT not in os.environ:
            os.environ[_TUNE_OUTPUT], _set_tune_output = "0", True
        if _BACKEND_LOG not in os.environ:
            os.environ[_BACKEND_LOG], _set_backend_log = "fatal", True
    else:
        warnings.resetwarnings()
        if _set_tune_output:
            os.environ.pop(_TUNE_OUTPUT, None)
            _set_tune_output = False
        if _set_backend_log:
            os.environ.pop(_BACKEND_LOG, None)
            _set_backend_log = False


def is_quiet() -> bool:
    return _quiet
