"""The top-level ``platform/`` folder must never shadow Python's stdlib ``platform`` module."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[1]


def test_platform_folder_is_not_a_regular_package():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists(), "platform/__init__.py would shadow stdlib platform"


def test_import_platform_and_ray_from_repo_root():
    code = "import platform, ray, rlad.core.data; print(platform.system()); print(platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    system, path = out.split()
    assert system == "Linux"
    assert not path.startswith(str(ROOT))


def test_ray_task_started_from_repo_root_sees_stdlib_platform():
    code = (
        "import ray, os\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
        "@ray.remote\n"
        "def probe():\n"
        "    import platform, rlad.core.data, sys\n"
        "    return platform.system(), platform.__file__, os.getcwd() in sys.path or '' in sys.path\n"
        "print(ray.get(probe.remote()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    system, path, root_on_path = eval(out.stdout.strip().splitlines()[-1])
    assert system == "Linux" and not path.startswith(str(ROOT))
    assert root_on_path, "the probe should run with the repo root on sys.path, else it proves nothing"
