"""The ``rlad`` command line: every option documented, the shared flags spelled the same way, and
``--data`` resolving files and ADBench names in one place."""
from __future__ import annotations

import argparse

import pytest

from rlad.platform.cli.main import build_parser
from rlad.core.data import DatasetError, adbench_file, resolve_data


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help():
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, p in subcommands().items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


@pytest.mark.parametrize("command", ["swift-hydra", "dplan", "tune", "bench"])
def test_data_commands_share_the_data_and_ray_flags(command):
    options = {o for a in subcommands()[command]._actions for o in a.option_strings}
    assert {"--data", "--address", "--num-cpus"} <= options


@pytest.mark.parametrize("command", ["swift-hydra", "dplan", "residual-rl"])
def test_training_commands_take_a_seed(command):
    assert "--seed" in {o for a in subcommands()[command]._actions for o in a.option_strings}


def test_num_cpus_and_address_exclude_each_other():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dplan", "--data", "cardio", "--num-cpus", "2", "--address", "auto"])


def test_resolve_data_takes_files_and_adbench_names(tmp_path):
    assert resolve_data("thyroid") == adbench_file("thyroid") == resolve_data(str(adbench_file("thyroid")))
    with pytest.raises(DatasetError, match="no such file"):
        resolve_data(tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="no ADBench file named"):
        resolve_data("no_such_dataset")


# flags whose default is a config dataclass's (None: not given, the dataclass decides)
CONFIG_BACKED = {
    "dplan": ["--episodes", "--steps", "--warmup", "--epsilon-steps", "--target-update", "--p", "--floor-weight", "--num-env-runners", "--max-rows"],
    "residual-rl": ["--iterations", "--ae-epochs", "--grid-size"],
    "meta-rae": ["--sizes", "--max-steps", "--feature-permutation"],
    "swift-hydra": ["--rounds", "--serve-cpus", "--train-workers", "--la", "--max-rows"],
}


@pytest.mark.parametrize("command", sorted(CONFIG_BACKED))
def test_training_flags_read_their_defaults_from_the_config(command):
    """One source of defaults: a flag that repeats a config's default would drift from it."""
    actions = {o: a for a in subcommands()[command]._actions for o in a.option_strings}
    assert {flag: actions[flag].default for flag in CONFIG_BACKED[command]} == dict.fromkeys(CONFIG_BACKED[command])


def test_dplan_flags_name_config_options():
    from rlad.algorithms.dplan import DPLANConfig
    from rlad.core.config import from_dict, set_dotted
    from rlad.platform.cli.dplan import CONFIG_FLAGS

    options: dict = {}
    for _, key, _, _ in CONFIG_FLAGS:
        set_dotted(options, key, 1)
    from_dict(DPLANConfig, options)  # unknown keys would raise


def test_a_long_tmpdir_gets_a_short_ray_root(monkeypatch, tmp_path):
    """Ray's sockets live under TMPDIR and AF_UNIX paths stop at 107 bytes: a long TMPDIR used to
    end ``rlad serve`` in a traceback; now Ray gets a short root, unless RAY_TMPDIR says otherwise."""
    from rlad.core.ray_init import SESSION_TAIL, SOCKET_PATH_MAX, local_temp_dir

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", "/tmp")
    assert local_temp_dir() is None
    monkeypatch.setenv("TMPDIR", str(tmp_path / ("x" * 90)))
    short = local_temp_dir()
    assert short is not None and len(short) + SESSION_TAIL <= SOCKET_PATH_MAX
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / ("x" * 90)))
    assert local_temp_dir() is None


def test_config_values_are_refused_where_the_config_is_built(tmp_path, capsys):
    """A value no detector can train with (a word for a number, 0 members) is a one-line error
    (exit 2) when the config is built, not a traceback from deep inside ``fit``; what YAML and
    checkpoints legitimately hold (an int for a float, numpy integers, None) still loads."""
    import re

    import numpy as np

    from rlad.algorithms.mamba_moe import MambaMoEConfig
    from rlad.algorithms.swift_hydra import SwiftHydraConfig
    from rlad.core.config import from_dict
    from rlad.core.errors import ConfigError
    from rlad.platform.cli.main import main

    for bad, message in (({"epochs": "ten"}, "epochs must be int, got 'ten'"), ({"epochs": True}, "epochs must be int, got True"),
                         ({"lr": "fast"}, "lr must be float, got 'fast'"), ({"members": 0}, "members=0 must be at least 1"),
                         ({"floor_weight": 2}, "floor_weight=2 must be in [0, 1]")):
        with pytest.raises(ConfigError, match=re.escape(f"MambaMoEConfig: {message}")):
            from_dict(MambaMoEConfig, bad)
    cfg = from_dict(MambaMoEConfig, {"lr": 1, "n_experts": np.int64(2), "floor_weight": None})
    assert (cfg.lr, cfg.n_experts, cfg.floor_weight) == (1, 2, None)
    with pytest.raises(ConfigError, match="SwiftHydraConfig: synthesis must be one of"):
        from_dict(SwiftHydraConfig, {"synthesis": "foo"})
    with pytest.raises(ConfigError, match=r"^SwiftHydraConfig\.detector: MambaMoEConfig: members=0"):
        from_dict(SwiftHydraConfig, {"detector": {"members": 0}})
    with pytest.raises(ConfigError, match=r"^SwiftHydraConfig\.env: SynthesisEnvConfig: unknown option\(s\) \['w_evad'\]"):
        from_dict(SwiftHydraConfig, {"env": {"w_evad": 1.0}})

    table = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    np.savetxt(table, np.c_[rng.random((60, 3)), np.r_[np.zeros(55), np.ones(5)]], delimiter=",", header="a,b,c,y", comments="")
    (tmp_path / "c.yaml").write_text("members: 0\n")
    assert main(["fit", "--data", str(table), "--save", str(tmp_path / "m.pt"), "--config", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["rlad fit: error: MambaMoEConfig: members=0 must be at least 1"]
    assert not (tmp_path / "m.pt").exists()
