"""How loud a command is. Commands are quiet by default: the user sees rlad's own progress and
results, not Ray's INFO lines, deprecation warnings or worker log prefixes; ``--verbose`` (or
``quiet(False)``) brings them back. Library users who never call :func:`quiet` keep Ray's defaults."""
from __future__ import annotations

import logging
import warnings

_quiet = False


def quiet(enabled: bool = True) -> None:
    """Silence (or not) Ray, RLlib, Tune, Serve and Python warnings in this process; Ray workers
    started afterwards by ``init_ray`` keep their logs to themselves."""
    global _quiet
    _quiet = enabled
    if enabled:
        warnings.filterwarnings("ignore")
        for name in ("ray", "ray.rllib", "ray.tune", "ray.train", "ray.serve", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)


def is_quiet() -> bool:
    return _quiet
