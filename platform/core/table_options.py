"""How ``rlad fit`` turns a table's columns into features: the one source of these defaults
(the CLI flags read them). Kept apart from :mod:`rlad.core.preprocess` so that reading the
defaults imports no pandas or scikit-learn (``rlad --help`` stays fast)."""
from __future__ import annotations

from dataclasses import dataclass

from rlad.core.errors import UserError


class TableOptionsError(UserError, ValueError):
    """An impossible table option."""


@dataclass
class TableOptions:
    features: tuple[str, ...] = ()  # the feature columns (empty: every column but id/label/drop)
    drop: tuple[str, ...] = ()  # columns left out
    categorical: tuple[str, ...] = ()  # columns taken as categories even when they hold numbers
    dates: str = "drop"  # "cyclical": sin/cos of hour, day of week, month; "drop": left out (why: mixed_tables_first.csv)
    missing: str = "impute"  # "impute": median / most frequent (+ indicators); "reject": name the rows
    missing_indicators: bool = True  # with impute, one 0/1 column per column that had gaps at fit time
    max_onehot: int = 10  # one-hot up to this many categories, frequency encoding above
    # shrink each one-hot block to the spread of a typical numeric column (at 0/1 a category
    # mismatch outweighs every scaled number in a distance): off, it did not help (mixed_tables.csv)
    balance_categories: bool = False

    def __post_init__(self) -> None:
        self.features, self.drop, self.categorical = (tuple(x) for x in (self.features, self.drop, self.categorical))
        if self.dates not in ("cyclical", "drop"):
            raise TableOptionsError(f"dates must be 'cyclical' or 'drop', got {self.dates!r}")
        if self.missing not in ("impute", "reject"):
            raise TableOptionsError(f"missing must be 'impute' or 'reject', got {self.missing!r}")
        if int(self.max_onehot) < 0:
            raise TableOptionsError(f"max_onehot must be >= 0, got {self.max_onehot}")
