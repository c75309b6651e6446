"""The CLI's progress bar over the epochs, rounds or episodes that training loops report
(``rlad.core.progress``)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rlad.core import progress

#: Outer loops win: a round of Swift Hydra contains epochs of its detector's member networks.
LEVEL = {"epoch": 0, "member": 1, "iteration": 2, "episode": 3, "round": 4}


@contextmanager
def progress_bar(desc: str) -> Iterator[None]:
    """A tqdm bar that follows the outermost loop reporting so far."""
    from tqdm.auto import tqdm

    state: dict = {"bar": None, "unit": None}

    def show(unit: str, done: int, total: int, metrics: dict[str, float]) -> None:
        if state["unit"] is not None and LEVEL.get(unit, 0) < LEVEL.get(state["unit"], 0):
            return
        if unit != state["unit"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"], state["unit"] = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True), unit
        bar = state["bar"]
        bar.total, bar.n = total, done
        if metrics:
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        bar.refresh()

    try:
        with progress.listen(show):
            yield
    finally:
        if state["bar"] is not None:
            state["bar"].close()
