"""Write ``examples/transactions.csv``: a small card-transactions table as users' tables look
(ids, amounts, merchant names, hours, timestamps, a risk score with a gap, a few known frauds).

    python examples/make_transactions.py                     # 3,000 rows, seed 0
    python examples/make_transactions.py --rows 500 --out /tmp/tx.csv

Columns: ``id`` (text), ``amount`` (euros), ``merchant`` (fuel, grocery, online, ...), ``hour``
(0-23), ``ts`` (ISO timestamps), ``country_risk`` (0-1, one empty cell), ``label`` (1 = a known
fraud; about a tenth of the frauds are labelled, the rest look normal in this column). Frauds
are large online or travel payments at night from risky countries.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

MERCHANTS = ["grocery", "fuel", "restaurant", "online", "pharmacy", "travel"]


def make(rows: int = 3000, seed: int = 0, fraud_share: float = 0.03) -> tuple[pd.DataFrame, np.ndarray]:
    """The table and the true fraud flag of each row (the ``label`` column marks only some)."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(rows) < fraud_share
    merchant = rng.choice(MERCHANTS, rows, p=[0.3, 0.2, 0.2, 0.15, 0.1, 0.05])
    merchant[fraud] = rng.choice(["online", "travel"], fraud.sum())
    hour = np.clip(rng.normal(14, 4, rows).round(), 0, 23).astype(int)
    hour[fraud] = rng.integers(0, 5, fraud.sum())
    amount = rng.lognormal(3.2, 0.8, rows).round(2)
    amount[fraud] = rng.lognormal(6.0, 0.5, fraud.sum()).round(2)
    risk = rng.beta(2, 8, rows).round(3)
    risk[fraud] = rng.beta(8, 2, fraud.sum()).round(3)
    day = pd.Timestamp("2026-03-01") + pd.to_timedelta(rng.integers(0, 60, rows), unit="D")
    ts = (day + pd.to_timedelta(hour, unit="h") + pd.to_timedelta(rng.integers(0, 3600, rows), unit="s"))
    label = (fraud & (rng.random(rows) < 0.1)).astype(int)
    frame = pd.DataFrame({"id": [f"tx{i:05d}" for i in range(rows)], "amount": amount, "merchant": merchant, "hour": hour,
                          "ts": ts.strftime("%Y-%m-%d %H:%M:%S"), "country_risk": risk.astype(object), "label": label})
    frame.loc[7, "country_risk"] = ""  # a gap, as real exports have
    return frame, fraud.astype(int)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("transactions.csv"))
    a = ap.parse_args()
    frame, fraud = make(a.rows, a.seed)
    frame.to_csv(a.out, index=False)
    print(f"wrote {a.out}: {len(frame)} rows, {int(fraud.sum())} frauds, {int(frame.label.sum())} labelled")
