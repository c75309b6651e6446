"""How well does honest model selection rank Tune trials? (prints figures; not a test)

For each shipped spec (DPLAN, Swift Hydra) and development data set, run a small search with
every trial run to the end (no early stopping), then compare per trial the validation metric
Tune selects on (labelled anomalies vs unlabelled rows of a held-out training share: what a
semi-supervised user knows) with the test AUC-PR of the same checkpoint:

- Spearman rank correlation between the two over the trials;
- test AUC-PR of the trial the validation metric selects, of the oracle (best test AUC-PR),
  and the mean over trials.

    python benchmarks/bench_tune_selection.py --datasets cardio thyroid satellite --samples 6
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from rlad.algorithms.registry import load_detector
from rlad.core.metrics import auc_scores
from rlad.core.ray_init import init_ray
from rlad.core.verbosity import quiet
from rlad.platform.runtime.tuning import build_tuner, prepare_data
from rlad.tune_specs.schema import load_spec_dict, parse_spec

# Small budgets: enough for trials to differ, small enough for 2 cores.
BUDGETS = {
    "dplan": ({"episodes": 4, "steps_per_episode": 500, "warmup_steps": 500, "epsilon_steps": 1000,
               "target_update_freq": 500}, {}),
    "swift_hydra": ({"rounds": 2, "ppo_iterations": 1, "top_l": 32, "detector": {"epochs": 8}, "vae": {"epochs": 20},
                     "ppo": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 2}}, {"max_rows": 3000}),
}


def trial_table(algorithm: str, dataset: str, samples: int, storage: Path, seed: int) -> list[tuple[float, float]]:
    """(validation metric, test AUC-PR) of each trial's best checkpoint."""
    raw = load_spec_dict(algorithm)
    config, split = BUDGETS[algorithm]
    budget = config.get("episodes") or config["rounds"]
    raw["config"] = {**raw["config"], **config}
    raw["split"] = {**raw["split"], **split, "seed": seed}
    raw.update(num_samples=samples, storage=str(storage), name=f"{algorithm}_{dataset}_{seed}",
               asha={"grace_period": budget, "reduction_factor": 2, "max_t": budget})
    spec = parse_spec(raw)
    data = prepare_data(dataset, spec)
    results = build_tuner(spec, data).fit()
    rows = []
    for result in results:
        if result.error is not None or result.metrics is None:
            continue
        checkpoint = result.get_best_checkpoint(spec.metric, "max")
        with checkpoint.as_directory() as d:
            detector = load_detector(Path(d) / "detector.pt")
        val = max(m[spec.metric] for m in result.metrics_dataframe.to_dict("records"))
        rows.append((float(val), auc_scores(data.y_test, detector.decision_function(data.X_test))["auc_pr"]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="+", default=["dplan", "swift_hydra"], choices=sorted(BUDGETS))
    p.add_argument("--datasets", nargs="+", default=["cardio", "thyroid", "satellite"])
    p.add_argument("--samples", type=int, default=6, help="trials per search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args()
    quiet()
    init_ray(num_cpus=args.num_cpus)
    print(f"{'spec':12s} {'dataset':16s} {'trials':>6s} {'spearman':>9s} | {'test AUC-PR: selected':>21s} {'oracle':>7s} {'mean':>6s}")
    summary = []
    with tempfile.TemporaryDirectory(prefix="rlad_tune_sel_") as storage:
        for algorithm in args.algorithms:
            for dataset in args.datasets:
                rows = trial_table(algorithm, dataset, args.samples, Path(storage), args.seed)
                if len(rows) < 3:
                    print(f"{algorithm:12s} {dataset:16s} {len(rows):6d}  too few finished trials")
                    continue
                val, test = np.array(rows).T
                rho = spearmanr(val, test).statistic
                chosen, oracle = test[np.argmax(val)], test.max()
                summary.append((rho, chosen, oracle, test.mean()))
                print(f"{algorithm:12s} {dataset:16s} {len(rows):6d} {rho:9.3f} | {chosen:21.4f} {oracle:7.4f} {test.mean():6.4f}", flush=True)
    if summary:
        m = np.nanmean(np.array(summary), axis=0)
        print(f"{'mean':29s} {m[0]:16.3f} | {m[1]:21.4f} {m[2]:7.4f} {m[3]:6.4f}")


if __name__ == "__main__":
    main()
