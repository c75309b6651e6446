"""Submitting an ``rlad`` command as a Ray job (``--submit``), the one way ``rlad tune`` and
``rlad retrain`` do it: local files the command names are shipped in the job's working_dir."""
from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def submit_job(address: str | None, command: str, argv_for: Callable[[Callable[[str], str]], list[str]]) -> int:
    """Submit ``argv_for(ship)`` to the cluster whose dashboard is ``address``; ``ship(value)``
    copies a local file into the uploaded working_dir and returns its name there."""
    from ray.job_submission import JobSubmissionClient

    if not address:
        raise SystemExit(f"rlad {command} --submit needs --address http://HEAD:8265 (the Ray dashboard)")
    upload = Path(tempfile.mkdtemp(prefix=f"rlad_{command}_job_"))

    def ship(value: str) -> str:
        if Path(value).is_file():
            shutil.copy(value, upload / Path(value).name)
            return Path(value).name
        return value

    try:
        entrypoint = shlex.join(argv_for(ship))
        job_id = JobSubmissionClient(address).submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(upload)})
    finally:
        shutil.rmtree(upload)
    print(f"submitted {job_id}: {entrypoint}")
    print(f"follow it with: ray job logs --follow --address {address} {job_id}")
    return 0
