"""Tune specs: parsing and validation, the validation split, ``rlad tune`` (local and --submit), and
tiny real ASHA searches of the shipped specs on ADBench data, with TensorBoard logs and a resume."""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ray import tune

from rlad.platform.cli.main import build_parser
from rlad.core.data import adbench_file, adbench_split, load_dataset
from rlad.platform.cli.main import main as cli_main
from rlad.platform.runtime import tuning
from rlad.platform.runtime.tuning import build_tuner, prepare_data, summarize
from rlad.tune_specs.schema import SpecError, load_spec, load_spec_dict, param_space, parse_spec

# Tiny budgets: config overrides, split overrides and the data set of each shipped spec.
TINY = {
    "swift_hydra": (
        {"rounds": 2, "ppo_iterations": 1, "top_l": 16, "rollout": {"num_env_runners": 0, "num_envs_per_runner": 4}, "detector": {"epochs": 1, "members": 1},
         "vae": {"epochs": 3}, "ppo": {"train_batch_size": 40, "minibatch_size": 40, "num_epochs": 1}, "env": {"episode_len": 5}},
        {"max_rows": 800, "la": 0.3},
        "thyroid",
    ),
    "dplan": (
        {"episodes": 2, "steps_per_episode": 50, "warmup_steps": 50, "epsilon_steps": 100, "target_update_freq": 50,
         "updates_per_step": 0.25, "batch_size": 16, "n_candidates": 50, "iforest_estimators": 10},
        {"max_rows": 1000, "n_labeled_anomalies": 20},
        "cardio",
    ),
}


def tiny_spec(algorithm: str, storage: Path, num_samples: int = 2, **changes) -> dict:
    """A shipped spec with tiny budgets, ``num_samples`` trials and results under ``storage``."""
    config, split, _ = TINY[algorithm]
    spec = load_spec_dict(algorithm)
    spec["config"].update(config)
    spec["split"].update(split)
    return {**spec, "num_samples": num_samples, "storage": str(storage), **changes}


# -- parsing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["swift_hydra", "dplan"])
def test_shipped_specs_parse(name):
    spec = load_spec(name)
    assert spec.algorithm == name and spec.metric.startswith("val_") and spec.num_samples > 1
    runners = spec.config["rollout" if name == "swift_hydra" else "runtime"]["num_env_runners"]
    assert spec.cpus_per_trial == 1 and runners == 0


def test_search_space_maps_dotted_keys_onto_nested_config():
    spec = load_spec("swift_hydra")
    space = param_space(spec)
    assert space["rollout"] == {"num_env_runners": 0} and space["detector"]["epochs"] == 20  # fixed options kept
    assert isinstance(space["detector"]["n_experts"], tune.search.sample.Categorical)
    assert space["detector"]["n_experts"].categories == [2, 4, 8]
    assert isinstance(space["env"]["w_evade"].get_sampler(), tune.search.sample.Float._Uniform)
    assert isinstance(space["env"]["w_div_start"].get_sampler(), tune.search.sample.Float._LogUniform)
    assert (space["env"]["w_div_start"].lower, space["env"]["w_div_start"].upper) == (0.1, 3.0)

    grid = parse_spec({**load_spec_dict("dplan"), "search": {"p": {"grid": [0.3, 0.5]}}})
    assert param_space(grid)["p"] == {"grid_search": [0.3, 0.5]}
    assert isinstance(param_space(load_spec("dplan"))["p"], tune.search.sample.Float)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_sample": 4}, r"unknown option\(s\) \['num_sample'\]"),
        ({"algorithm": "ppo"}, "unknown algorithm 'ppo'"),
        ({"metric": "test_auc_pr"}, "never select on the test split"),
        ({"val_size": 1.5}, "val_size"),
        ({"asha": {"grace": 1}}, r"ASHASettings: unknown option\(s\) \['grace'\]"),
        ({"config": {"roundz": 2}}, r"config: SwiftHydraConfig: unknown option\(s\) \['roundz'\]"),
        ({"config": {"use_serve": False}}, r"unknown option\(s\) \['use_serve'\]"),
        ({"search": {"detector.n_expert": {"choice": [2]}}}, "MambaMoEConfig has no option 'n_expert'"),
        ({"search": {"detectr.n_experts": {"choice": [2]}}}, "SwiftHydraConfig has no option 'detectr'"),
        ({"search": {"detector": {"choice": [2]}}}, "is a group of options"),
        ({"search": {"env.w_div_start": {"normal": [0, 1]}}}, "unknown sampler 'normal'"),
        ({"search": {"env.w_div_start": {"uniform": [2.0, 1.0]}}}, "low < high"),
        ({"search": {"env.w_div_start": {"loguniform": [0.0, 1.0]}}}, "low > 0"),
        ({"search": {"env.w_div_start": {"choice": []}}}, "non-empty list"),
        ({"search": {"env.w_div_start": {"choice": [1], "uniform": [0, 1]}}}, "expected one of"),
        ({"search": {"rounds": {"choice": [1, 2]}}}, "also fixed in config"),
    ],
)
def test_bad_specs_raise_clear_errors(change, message):
    data = load_spec_dict("swift_hydra")
    if "config" in change:
        change = {"config": {**data["config"], **change["config"]}}
    with pytest.raises(SpecError, match=message):
        parse_spec({**data, **change})


def test_spec_from_file_and_unknown_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**load_spec_dict("dplan"), "name": "mine"}))
    assert load_spec(path).name == "mine"
    with pytest.raises(SpecError, match="no shipped spec"):
        load_spec("nope")


def test_validation_split_is_carved_from_training_rows():
    spec = load_spec("swift_hydra")
    data = prepare_data("thyroid", spec)
    n_train, n_val = len(data.X_train), len(data.X_val)
    assert abs(n_val / (n_train + n_val) - spec.val_size) < 0.01
    assert data.y_train.sum() >= 1 and data.y_val.sum() >= 1  # labelled anomalies to train on, anomalies to validate
    split = adbench_split(load_dataset(adbench_file("thyroid")), spec.split)
    both = np.concatenate([data.X_train, data.X_val])
    np.testing.assert_array_equal(both[np.lexsort(both.T)], split.X_train[np.lexsort(split.X_train.T)])  # a partition
    assert 0 < data.y_train.sum() < split.y_train_semi.sum()  # labelled anomalies stratified over both parts
    assert data.y_val.sum() + data.y_train.sum() == split.y_train_semi.sum()  # validation labels: the known ones only
    np.testing.assert_array_equal(data.X_test, split.X_test)  # the test split is untouched


def test_validation_never_sees_labels_of_unlabelled_rows():
    """Unlabelled anomalies in the validation share count as unlabelled (0): selection uses only
    what a semi-supervised user knows."""
    spec = load_spec("dplan")
    data = prepare_data("cardio", spec)
    split = adbench_split(load_dataset(adbench_file("cardio")), spec.split)
    lookup = {row.tobytes(): (t, k) for row, t, k in zip(split.X_train, split.y_train, split.y_train_semi)}
    truth, known = np.array([lookup[row.tobytes()] for row in data.X_val]).T
    assert (truth > known).any()  # unlabelled anomalies exist in the validation share...
    np.testing.assert_array_equal(data.y_val, known)  # ...and are labelled 0 there


# -- CLI --------------------------------------------------------------------------------------------
def test_cli_parses_tune_command():
    args = build_parser().parse_args(["tune", "swift_hydra", "--data", "thyroid", "--num-cpus", "2", "--resume"])
    assert (args.spec, args.data, args.num_cpus, args.address, args.resume, args.submit) == ("swift_hydra", "thyroid", 2, None, True, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tune", "dplan", "--data", "cardio", "--num-cpus", "2", "--address", "auto"])


def test_submit_sends_the_same_command_as_a_ray_job(tmp_path, monkeypatch, capsys):
    import ray.job_submission

    spec, data = tmp_path / "mine.yaml", tmp_path / "rows.csv"
    spec.write_text("algorithm: dplan\nname: mine\n")
    data.write_text("a,y\n0.1,0\n")
    jobs = []

    class FakeClient:
        def __init__(self, address):
            self.address = address

        def submit_job(self, entrypoint, runtime_env):
            uploaded = sorted(p.name for p in Path(runtime_env["working_dir"]).iterdir())
            jobs.append((self.address, entrypoint, uploaded))
            return "raysubmit_1"

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeClient)
    rc = cli_main(["tune", str(spec), "--data", str(data), "--submit", "--address", "http://127.0.0.1:8265",
                   "--storage", "s3://bucket/rlad", "--resume"])
    assert rc == 0
    assert jobs == [("http://127.0.0.1:8265",
                     "rlad tune mine.yaml --data rows.csv --address auto --storage s3://bucket/rlad --resume",
                     ["mine.yaml", "rows.csv"])]
    assert "raysubmit_1" in capsys.readouterr().out
    cli_main(["tune", "dplan", "--data", "cardio", "--submit", "--address", "http://head:8265"])
    assert jobs[-1][1:] == ("rlad tune dplan --data cardio --address auto", [])  # shipped spec, cluster-side data


def test_resume_without_an_experiment_fails_clearly(tmp_path):
    spec = parse_spec(tiny_spec("dplan", tmp_path))
    with pytest.raises(FileNotFoundError, match="no Tune experiment to resume"):
        build_tuner(spec, prepare_data("cardio", spec), resume=True)


# -- real searches (2 CPUs) ---------------------------------------------------------------------------
def check_experiment(folder: Path, summary: dict, spec_dict: dict, n_trials: int) -> None:
    """Trials reported the validation metric with checkpoints and TensorBoard logs; best.json holds
    the summary with the searched keys and test AUCs."""
    trials = [p for p in folder.iterdir() if p.is_dir()]
    assert len(trials) == n_trials
    for trial in trials:
        assert list(trial.glob("events.out.tfevents.*")), f"no TensorBoard events in {trial}"
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        assert rows and all(0.0 <= r["val_auc_pr"] <= 1.0 for r in rows)
        assert list(trial.glob("checkpoint_*/detector.pt"))
    assert json.loads((folder / "best.json").read_text()) == summary
    assert summary["errors"] == 0 and summary["trials"] == n_trials
    assert set(summary["config"]) == set(spec_dict["search"])
    assert 0.0 <= summary["test"]["auc_roc"] <= 1.0 and 0.0 <= summary["test"]["auc_pr"] <= 1.0


def test_swift_hydra_spec_runs_through_the_cli(ray_cluster, tmp_path, capsys):
    spec_dict = tiny_spec("swift_hydra", tmp_path / "results")
    spec_file = tmp_path / "swift_hydra.yaml"
    spec_file.write_text(yaml.safe_dump(spec_dict))
    tuner = build_tuner(load_spec(spec_file), prepare_data("thyroid", load_spec(spec_file)))
    scheduler = tuner._local_tuner._tune_config.scheduler
    assert isinstance(scheduler, tune.schedulers.ASHAScheduler) and scheduler._max_t == 2

    assert cli_main(["tune", str(spec_file), "--data", "thyroid"]) == 0
    out = capsys.readouterr().out
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert "best config {'detector.n_experts'" in out and "test AUC-ROC" in out
    check_experiment(tmp_path / "results" / spec_dict["name"], summary, spec_dict, n_trials=2)
    assert summary["dataset"] == "38_thyroid" and 1 <= summary["iteration"] <= 2


def test_dplan_spec_runs(ray_cluster, tmp_path):
    spec_dict = tiny_spec("dplan", tmp_path)
    spec = parse_spec(spec_dict)
    data = prepare_data("cardio", spec)
    summary = summarize(spec, build_tuner(spec, data).fit(), data)
    check_experiment(tmp_path / spec.name, summary, spec_dict, n_trials=2)
    assert 0.2 <= summary["config"]["p"] <= 0.8


def test_restored_experiment_continues_an_errored_trial(ray_cluster, tmp_path, monkeypatch):
    """The first attempt fails right after reporting episode 1; ``Tuner.restore`` continues the
    trial from that checkpoint (RLlib state included) and it reports episode 2 only."""
    spec = parse_spec(tiny_spec("dplan", tmp_path, num_samples=1, name="dplan_resume"))
    data = prepare_data("cardio", spec)
    marker = tmp_path / "failed_once"

    @functools.wraps(tuning.train_dplan)
    def fail_once(config, data):
        import ray.tune

        report = ray.tune.report

        def report_then_fail(*args, **kwargs):
            report(*args, **kwargs)
            if not marker.exists():
                marker.touch()
                raise RuntimeError("injected failure after the first report")

        ray.tune.report = report_then_fail
        try:
            tuning.train_dplan(config, data)
        finally:
            ray.tune.report = report

    with monkeypatch.context() as m:
        m.setitem(tuning.TRAINABLES, "dplan", dataclasses.replace(tuning.TRAINABLES["dplan"], fn=fail_once))
        first = build_tuner(spec, data).fit()
    assert len(first.errors) == 1 and marker.exists()
    assert [r["episode"] for r in first[0].metrics_dataframe.to_dict("records")] == [1]

    resumed = build_tuner(spec, data, resume=True).fit()
    assert not resumed.errors
    rows = resumed[0].metrics_dataframe
    assert rows["episode"].tolist() == [1, 2] and rows["training_iteration"].tolist() == [1, 2]
    assert np.all(np.diff(rows["env_steps"]) > 0)
    assert summarize(spec, resumed, data)["iteration"] in (1, 2)
