"""How loud a command is. Commands are quiet by default: the user sees rlad's own progress and
results (printed), not Ray's INFO lines, deprecation warnings or worker log prefixes; ``--verbose``
(or ``quiet(False)``) brings them back. Library users who never call :func:`quiet` keep the
defaults of Ray and Python."""
from __future__ import annotations

import logging
import warnings

_quiet = False


def quiet(enabled: bool = True) -> None:
    """Silence (or not) every log record below ERROR and every Python warning in this process;
    Ray workers started afterwards by ``init_ray`` keep their logs to themselves. A process-wide
    switch, since Ray, RLlib and Serve reset their own loggers' levels when they start."""
    global _quiet
    _quiet = enabled
    logging.disable(logging.WARNING if enabled else logging.NOTSET)
    if enabled:
        warnings.filterwarnings("ignore")
    else:
        warnings.resetwarnings()


def is_quiet() -> bool:
    return _quiet
