"""`kerastl sweep` across processes: a sweep killed and resumed, and processes sharing a sweep
through a database. (Apart from test_sweep.py so that the two test processes share the
slow sweeps.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from conftest import write_config
from test_sweep import _adapt, _sweep


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_interrupted_trial_from_the_checkpoint(tmp_path):
    cfg = _adapt(epochs=4, steps_per_epoch=10)
    a = write_config(tmp_path / "dann.yaml", cfg)
    args = [a, "--trials", "2", "--out", "sw", "--ensemble", "1", "--distill-steps", "10", "--parallel", "1"]
    first = _sweep(args, tmp_path, start_new_session=True)
    state = tmp_path / "sw" / "trials" / "trial-000" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert state.exists(), first.communicate()[0]
    os.kill(first.pid, signal.SIGKILL)  # the sweep process only: its trial's run must stop with it
    first.wait()
    log = tmp_path / "sw" / "logs" / "trial-000.log"
    for _ in range(60):
        alive = subprocess.run(["pgrep", "-f", "trials/trial-000"], capture_output=True, text=True).stdout.split()
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, "the trial's run outlived its sweep process"

    second = _sweep(args, tmp_path)
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out
    assert "trial-000: its process is gone; queued again to resume from its checkpoint" in out
    text = log.read_text()
    assert "--resume" in text and "resumed  after" in text, text
    results = json.loads((tmp_path / "sw" / "results.json").read_text())
    assert [t["trial"] for t in results["trials"]] == ["trial-000", "trial-001"]
    history = yaml.safe_load((tmp_path / "sw" / "trials" / "trial-000" / "config.yaml").read_text())
    assert history["seed"] == 0 and history["split_seed"] == 0


@pytest.mark.slow
def test_processes_share_a_sweep_through_a_database(tmp_path):
    url = os.environ.get("KERASTL_TEST_DATABASE_URL")
    if not url:
        pytest.skip("no database server: .ci/run starts Debian's PostgreSQL and sets KERASTL_TEST_DATABASE_URL")
    import optuna

    a = write_config(tmp_path / "dann.yaml", _adapt(steps_per_epoch=3))
    study = f"kerastl-test-{os.getpid()}-{time.time_ns()}"
    args = [a, "--trials", "2", "--out", "sw", "--ensemble", "1", "--distill-steps", "5", "--parallel", "1",
            "--storage", url,
            "--study", study]
    procs = [_sweep(args, tmp_path)]
    time.sleep(3)
    procs.append(_sweep(args, tmp_path))  # as another machine would, with the sweep folder shared
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = [[line.split()[1] for line in out.splitlines() if line.startswith("[")] for out in outs]
    assert sorted(ran[0] + ran[1]) == ["trial-000", "trial-001"] and ran[0] and ran[1], outs
    assert not (tmp_path / "sw" / "study.journal").exists()  # the state is in the database
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE"]
    assert json.loads((tmp_path / "sw" / "results.json").read_text())["pick"]["trial"] in ("trial-000", "trial-001")
