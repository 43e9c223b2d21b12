"""`kerastl sweep`: its plan and space, the criteria and the pick, and whole sweeps on tiny
configs (two processes sharing one, a kill and a resume, the distilled model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from kerastl.errors import ConfigError
from kerastl.sweep.plan import make_plan, parse_space
from kerastl.sweep.scoring import CRITERIA, criteria, pick, regrets, top

from conftest import tiny_config, write_config


def _adapt(weights=None, method="dann", **adapt):
    params = {"hidden": 32, "max_lambda": 0.3} if method == "dann" else {}
    cfg = tiny_config(
        name=f"tiny-{method}",
        target={"labels_per_class": None, "val_fraction": 0.2, "test_fraction": 0.3},
        model={"weights": str(weights) if weights else "none"},
        adapt={"method": method, "epochs": 2, "steps_per_epoch": 6, "optimizer": "adam", "lr": 0.002,
               "params": params, **adapt},
    )
    cfg["source"]["num_examples"] = 600
    cfg["train"]["intra_op_threads"] = 1
    return cfg


# --- the plan ----------------------------------------------------------------------------

def test_plan_runs_each_config_in_turn_with_its_own_seed_on_one_split(tmp_path):
    a = write_config(tmp_path / "a.yaml", {**_adapt(), "seed": 5})
    b = write_config(tmp_path / "b.yaml", _adapt(method="source_only"))
    plan = make_plan([a, b], [], 5, None)
    assert [plan.planned(i) for i in range(3)] == [{"config": "a", "seed": 5}, {"config": "b", "seed": 6},
                                                   {"config": "a", "seed": 7}]
    assert all(c["split_seed"] == 5 for c in plan.configs.values())  # one split for every trial
    cfg = plan.trial_config("b", 9, {"adapt.lr": 0.01})
    assert (cfg.seed, cfg.data_seed, cfg.adapt.lr) == (9, 5, 0.01)
    assert make_plan([a, b], ["adapt.lr=0.01"], 5, None).fingerprint() != plan.fingerprint()


def test_trials_at_a_time_by_default_are_as_many_as_the_cores_hold_with_the_threads_each_asks(tmp_path):
    from kerastl.sweep.runner import default_parallel

    one = write_config(tmp_path / "one.yaml", _adapt())  # train.intra_op_threads: 1
    assert default_parallel(make_plan([one], [], 8, None), cores=2) == 2
    assert default_parallel(make_plan([one], [], 8, None), cores=5) == 5
    assert default_parallel(make_plan([one], [], 1, None), cores=2) == 1  # never more than the trials
    assert default_parallel(make_plan([one], ["train.intra_op_threads=2"], 8, None), cores=5) == 2
    assert default_parallel(make_plan([one], ["train.intra_op_threads=null"], 8, None), cores=4) == 1  # all cores


def test_plan_refuses_configs_whose_data_differ_and_configs_without_adaptation(tmp_path):
    a = write_config(tmp_path / "a.yaml", _adapt())
    other = _adapt()
    other["target"]["test_fraction"] = 0.4
    b = write_config(tmp_path / "b.yaml", other)
    with pytest.raises(ConfigError, match="differ in their target section"):
        make_plan([a, b], [], 2, None)
    plain = write_config(tmp_path / "plain.yaml", tiny_config())
    with pytest.raises(ConfigError, match="plain.yaml: a sweep runs domain adaptation; this config has no adapt"):
        make_plan([plain], [], 2, None)


def test_space_file_ranges_lists_and_declared_ranges_are_checked(tmp_path):
    dims = parse_space({"adapt.lr": {"low": 0.001, "high": 0.1, "log": True}, "model.dropout": [0.0, 0.2],
                        "adapt.params.max_lambda": "declared"}, "s.yaml")
    declared = dims[2].for_method("dann")
    assert (declared.low, declared.high) == (0.0, 100.0)  # dann's declaration
    assert dims[2].for_method("source_only") is None  # no such parameter: the key does not apply
    for bad, message in [({"seed": [1, 2]}, "the sweep sets seed"),
                         ({"adapt.lr": {"low": 0.1, "high": 0.01}}, "low < high"),
                         ({"adapt.lr": {"low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
                         ({"adapt.params.nonsense": "declared"}, "no method declares"),
                         ({"adapt.method": ["dann"]}, "give each method its own config")]:
        with pytest.raises(ConfigError, match=message):
            parse_space(bad, "s.yaml")
    a = write_config(tmp_path / "a.yaml", _adapt())
    space = tmp_path / "space.yaml"
    space.write_text("adapt.weight: {low: -1.0, high: 1.0}\n")
    with pytest.raises(ConfigError, match=r"adapt.weight: the value -1.0 makes a invalid"):
        make_plan([a], [], 2, str(space))


# --- criteria and the pick ---------------------------------------------------------------

def _trial(pred, conf, im):
    return {"scores": {"im": im, "entropy": conf, "oracle": float(np.mean(np.array(pred) == np.arange(10) % 5))},
            "heldout": np.array(pred)}


def test_agreement_catches_a_confident_run_with_a_wrong_class_mapping():
    truth = list(np.arange(10) % 5)
    wrong = [(c + 1) % 5 for c in truth]  # every class mapped to the next: confident, all wrong
    trials = [_trial(truth, -0.5, 1.2), _trial(truth[:8] + [0, 0], -0.6, 1.1), _trial(wrong, -0.1, 1.5)]
    rows = criteria(trials)
    assert pick(rows, "entropy") == 2 and pick(rows, "im") == 2  # the trap: confidence picks the wrong run
    assert rows[2]["agreement"] < rows[0]["agreement"]
    assert pick(rows, "im_agree") == 0
    assert regrets(rows)["im"]["regret"] == pytest.approx(1.0) and regrets(rows)["im_agree"]["regret"] == 0.0


def test_pick_is_the_criterion_argmax_and_top_ranks_without_nan():
    rows = [{"im": 0.3}, {"im": float("nan")}, {"im": 0.9}, {"im": 0.9}, {"im": 0.1}]
    assert pick(rows, "im") == 2  # the first of ties
    assert top(rows, "im", 3) == [2, 3, 0]
    assert pick([{"im": float("nan")}], "im") is None
    assert "agreement" in CRITERIA and "im" in CRITERIA


def test_a_parent_folder_lists_a_sweep_by_its_trials_until_it_has_a_model(tmp_path):
    from kerastl import runs
    from kerastl.evaluation.compare import find_runs

    sweep = tmp_path / "sw"
    (sweep / "trials" / "trial-000").mkdir(parents=True)
    (sweep / runs.SWEEP_PLAN).write_text("{}")
    (sweep / "trials" / "trial-000" / runs.CONFIG).write_text("seed: 0\n")
    assert find_runs(tmp_path) == [sweep / "trials" / "trial-000"]
    (sweep / "model").mkdir()
    (sweep / "model" / runs.CONFIG).write_text("seed: 0\n")
    assert find_runs(tmp_path) == [sweep / "model"]
    assert set(find_runs(sweep)) == {sweep / "trials" / "trial-000", sweep / "model"}


# --- whole sweeps ------------------------------------------------------------------------

def _sweep(args, cwd, **kw):
    return subprocess.Popen([sys.executable, "-m", "kerastl", "sweep", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            **kw)


@pytest.mark.slow
def test_two_processes_share_one_sweep_and_it_ships_one_distilled_model(trained_run, tmp_path):
    a = write_config(tmp_path / "dann.yaml", _adapt(trained_run.run_dir))
    b = write_config(tmp_path / "so.yaml", _adapt(trained_run.run_dir, method="source_only"))
    args = [a, b, "--trials", "3", "--out", "sw", "--ensemble", "3", "--distill-steps", "60", "--parallel", "1"]
    procs = [_sweep(args, tmp_path)]
    time.sleep(3)  # the second joins the study the first created
    procs.append(_sweep(args, tmp_path))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = [sorted(line.split()[1] for line in out.splitlines() if line.startswith("[")) for out in outs]
    assert sorted(ran[0] + ran[1]) == ["trial-000", "trial-001", "trial-002"], outs  # each trial once
    assert ran[0] and ran[1], outs  # both processes trained

    sweep = tmp_path / "sw"
    results = json.loads((sweep / "results.json").read_text())
    assert [t["trial"] for t in results["trials"]] == ["trial-000", "trial-001", "trial-002"]
    assert [t["config"] for t in results["trials"]] == ["dann", "so", "dann"]
    scores = [t["scores"] for t in results["trials"]]
    assert results["pick"]["index"] == pick(scores, results["criterion"])
    assert results["ensemble"]["members"] == [results["trials"][i]["trial"] for i in top(scores, "im_agree", 3)]
    for t in results["trials"]:  # each trial's oracle is its own run's target test accuracy
        metrics = json.loads((sweep / t["run_dir"] / "metrics.json").read_text())
        assert t["scores"]["oracle"] == pytest.approx(metrics["target_test"]["accuracy"], abs=1e-6)

    model = results["model"]  # distilled from the ensemble: closer to it than the model it started from
    assert model["agreement_with_ensemble"] > model["agreement_before"] + 0.1, model
    losses = [float(line.split(",")[2]) for line in (sweep / "model" / "history.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0], losses
    assert model["size_bytes"] < model["ensemble_size_bytes"]
    shipped = json.loads((sweep / "model" / "metrics.json").read_text())
    assert shipped["target_test"]["accuracy"] == pytest.approx(model["target_test_accuracy"])
    converted = subprocess.run([sys.executable, "-m", "kerastl", "convert", str(sweep / "model")],
                               capture_output=True, text=True)  # passes the export checks of any run
    assert converted.returncode == 0 and (sweep / "model" / "model.tflite").exists(), converted.stderr
    assert (sweep / "report.html").read_text().count("<tr>") >= 4
    (sweep / "report.html").unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "kerastl", "report", str(sweep)], capture_output=True, text=True)
    assert rebuilt.returncode == 0 and "trial-002" in (sweep / "report.html").read_text(), rebuilt.stderr

    listing = subprocess.run([sys.executable, "-m", "kerastl", "runs", str(sweep)], capture_output=True, text=True)
    assert listing.returncode == 0 and "trial-001" in listing.stdout and "model" in listing.stdout, listing.stdout

    again = _sweep(args, tmp_path)  # finished: nothing trains again, the results are rebuilt
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0 and not any(line.startswith("[") for line in out.splitlines()), out


def test_a_sweep_folder_of_other_configs_is_refused(tmp_path):
    a = write_config(tmp_path / "a.yaml", _adapt())
    from kerastl.sweep.plan import make_plan as plan_of
    from kerastl.sweep.study import PLAN

    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / PLAN).write_text(plan_of([a], [], 2, None).to_yaml())
    result = subprocess.run([sys.executable, "-m", "kerastl", "sweep", a, "--trials", "3", "--out", str(tmp_path / "sw")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "holds a sweep of other configs, overrides, --trials or --space" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_trial_whose_process_is_gone_is_queued_again_with_its_values_and_run(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from kerastl.sweep import study as studies

    a = write_config(tmp_path / "a.yaml", _adapt())
    plan = make_plan([a], [], 3, None)
    study = studies.create_or_join(tmp_path, plan, optuna.storages.InMemoryStorage(), "s", echo=lambda s: None)
    dead = subprocess.Popen(["true"])
    dead.wait()
    now = time.time()
    owners = [{"host": studies.socket.gethostname(), "pid": dead.pid, "since": now},  # exited here
              {"host": "elsewhere", "pid": 1, "since": now - 2 * studies.STALE_AFTER},  # no heartbeat for long
              {"host": "elsewhere", "pid": 1, "since": now - 2 * studies.STALE_AFTER}]  # but a recent one
    for owner in owners:
        trial = study.ask()
        trial.suggest_categorical("config", list(plan.configs))
        trial.suggest_int("seed", 0, 2**31 - 1)
        trial.set_user_attr("owner", owner)
    trial.set_user_attr("alive_at", now - 5)
    assert studies.reap_stale(study, plan, echo=lambda s: None, now=now) == 2
    states = {t.number: t.state for t in study.get_trials()}
    assert [states[i] for i in range(3)] == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING]
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.user_attrs["run"], t.user_attrs["resumes"]) for t in queued] == [("trial-000", 0), ("trial-001", 1)]
    assert studies.counts(study) == {**studies.counts(study), "FAIL": 0, "WAITING": 2, "RUNNING": 1}
