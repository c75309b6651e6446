"""A Tune run killed mid-way (SIGKILL of the whole process group, Ray included) resumes from its
trials' checkpoints with ``rlad tune --resume`` and completes. The first run is held after its
first report (``RLAD_TUNE_HOLD_FILE``), so the kill cannot race the run to its end, and it is
killed once the experiment state that ``--resume`` reads holds that report's checkpoint (read
back, not waited for), so the kill cannot race the driver's bookkeeping either."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import yaml

from ray import tune

from rlad.platform.runtime.tuning import HOLD_FILE_ENV
from rlad.tune_specs.schema import load_spec_dict


EPISODES = 6


def rlad_tune(*args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rlad.platform.cli", "tune", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def checkpoint_recorded(experiment) -> bool:
    """Whether the experiment state ``--resume`` reads already holds the trial's checkpoint."""
    try:
        trials = tune.ExperimentAnalysis(str(experiment)).trials
    except Exception:  # not written yet, or caught mid-write
        return False
    return len(trials) == 1 and trials[0].checkpoint is not None


def test_killed_tune_run_resumes_from_checkpoints(tmp_path):
    spec = load_spec_dict("dplan")
    spec["config"].update({"episodes": EPISODES, "steps_per_episode": 200, "warmup_steps": 50, "epsilon_steps": 100,
                           "target_update_freq": 50, "updates_per_step": 0.25, "batch_size": 16,
                           "n_candidates": 50, "iforest_estimators": 10})
    spec["split"].update({"max_rows": 1000, "n_labeled_anomalies": 20})
    spec.update({"num_samples": 1, "name": "killed", "search": {"p": {"grid": [0.5]}}})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    args = [str(spec_file), "--data", "cardio", "--num-cpus", "2", "--storage", str(tmp_path / "results")]
    experiment = tmp_path / "results" / "killed"

    hold = tmp_path / "hold"
    hold.touch()
    # Tune saves its experiment state at most every 10 s by default: every second here, so the
    # recorded checkpoint shows up soon after the report (the test reads it back either way).
    first = rlad_tune(*args, env={**os.environ, HOLD_FILE_ENV: str(hold), "TUNE_GLOBAL_CHECKPOINT_S": "1"})
    deadline = time.time() + 240
    while not any(p.stat().st_size > 0 and len(pd.read_csv(p)) for p in experiment.glob("*/progress.csv")):
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "no result reported in time"
        time.sleep(0.5)
    while not checkpoint_recorded(experiment):  # the trial is held after its first report meanwhile
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "the first report's checkpoint was not recorded in the experiment state"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    hold.unlink()
    progress = next(experiment.glob("*/progress.csv"))
    killed_at = pd.read_csv(progress)["episode"].tolist()
    assert killed_at and killed_at[-1] < EPISODES, "the run finished before it was killed: the test proves nothing"

    second = rlad_tune(*args, "--resume")
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert summary["errors"] == 0 and summary["trials"] == 1
    assert "View detailed results" not in out and "Configuration for experiment" not in out  # quiet: no Tune boxes
    episodes = pd.read_csv(progress)["episode"].tolist()
    assert episodes[-1] == EPISODES  # completed
    assert episodes[: len(killed_at)] == killed_at and len(episodes) < len(killed_at) + EPISODES  # continued, not restarted
