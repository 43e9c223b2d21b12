"""`kerastl sweep`: take waiting trials until none is left, run each as `kerastl train`,
score it, and, in the process that finishes the last trial, build the sweep's model.

    SWEEP/
      sweep.yaml          the plan: resolved configs, trial budget, search space
      configs/NAME.yaml   each config as the trials run it
      study.journal       Optuna's journal (the default storage)
      trials/trial-NNN/   ordinary run directories (+ sweep_outputs.npz, the trial's outputs
                          on the shared held-back and test images)
      logs/trial-NNN.log  each trial's output
      results.json        criteria per trial, the pick, regret, ensemble and model accuracy
      model/              the model to ship: the top trials' ensemble distilled into one
                          model, an ordinary run directory (`kerastl export SWEEP/model`)
      report.html
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from kerastl import runs
from kerastl.errors import KerastlError
from kerastl.sweep import study as studies
from kerastl.sweep.plan import Plan, make_plan
from kerastl.sweep.scoring import load_domains

log = logging.getLogger("kerastl")



def default_dir(config_paths: list[str]) -> Path:
    """saved_models/<first config's name>-sweep: the same command finds the same sweep."""
    return Path("saved_models") / f"{Path(config_paths[0]).stem}-sweep"


def sweep(config_paths: list[str], overrides: list[str], *, out: str | None, trials: int, space: str | None,
          parallel: int, storage_url: str | None, study_name: str | None, criterion: str, ensemble: int,
          distill_steps: int, echo=print) -> Path:
    """Runs a sweep, joins it (when another process runs it), or resumes it (when it was
    stopped), then builds its model if no trial is left; returns the sweep folder.

    Args:
        config_paths: one config per method to try; they must share their data sections.
        overrides: `KEY=VALUE` overrides applied to every config.
        out: the sweep folder (default saved_models/<first config's name>-sweep).
        trials: the trial budget.
        space: a YAML search space file, or None.
        parallel: trials at a time in this process (the cores are split between them);
            None: `default_parallel`.
        storage_url: a database URL shared by several machines (default: a journal file).
        study_name: the study's name in the storage (default: the folder's name).
        criterion: the label-free criterion that picks (`scoring.CRITERIA`).
        ensemble: how many top trials the shipped model is distilled from.
        distill_steps: training steps of that distillation.
    """
    plan = make_plan(config_paths, overrides, trials, space)
    sweep_dir = Path(out) if out else default_dir(config_paths)
    recorded = sweep_dir / studies.PLAN
    if recorded.exists():
        old = Plan.from_yaml(recorded.read_text(encoding="utf-8"), str(recorded))
        if old.fingerprint() != plan.fingerprint():
            raise KerastlError(f"{sweep_dir} holds a sweep of other configs, overrides, --trials or --space; "
                               "run the command that started it to join or resume it, or choose another --out")
    elif sweep_dir.exists() and any(p for p in sweep_dir.iterdir() if p.name != studies.JOURNAL):
        raise KerastlError(f"--out {sweep_dir}: the folder exists and is not a sweep; choose a new folder")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not recorded.exists():  # first: a process joining now sees a sweep folder, not a stranger's
        runs.atomic_write(recorded, plan.to_yaml())
    for name, data in plan.configs.items():
        import yaml

        path = sweep_dir / "configs" / f"{name}.yaml"
        if not path.exists():
            runs.atomic_write(path, yaml.safe_dump(data, sort_keys=False))
    import_optuna()
    storage = studies.open_storage(sweep_dir, storage_url)
    study = studies.create_or_join(sweep_dir, plan, storage, study_name or sweep_dir.resolve().name, echo=echo)
    runner = Runner(sweep_dir, plan, study, parallel=parallel or default_parallel(plan), criterion=criterion,
                    echo=echo)
    runner.work()
    left = studies.counts(study)
    if left["RUNNING"] or left["WAITING"]:
        echo(f"sweep {sweep_dir}: {left['RUNNING']} trial(s) still running in other processes; the one that "
             "finishes last builds the model (or run this command again later)")
        return sweep_dir
    from kerastl.sweep.finalize import finalize

    finalize(sweep_dir, plan, study, criterion=criterion, ensemble=ensemble, distill_steps=distill_steps,
             echo=echo)
    return sweep_dir


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_parallel(plan: Plan, cores: int | None = None) -> int:
    """Trials at a time when `--parallel` is not given: as many as the cores hold, each trial
    with the threads its config asks for (`train.intra_op_threads`; a config that leaves it
    unset takes every core, so one trial at a time). Small models gain: on 2 cores, two
    1-thread trials side by side finished 1.35x as many trials per hour as one at a time."""
    cores = cores or len(_cores())
    wanted = [cfg["train"].get("intra_op_threads") or cores for cfg in plan.configs.values()]
    return max(1, min(plan.trials, cores // max(wanted)))


def import_optuna():
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise KerastlError("kerastl sweep needs Optuna: pip install 'kerastl[sweep]' (or pip install optuna)") from None


class Runner:
    """`parallel` workers in this process, each taking trials one after another."""

    def __init__(self, sweep_dir: Path, plan: Plan, study, *, parallel: int, criterion: str, echo=print):
        self.dir, self.plan, self.study, self.echo = sweep_dir, plan, study, echo
        self.parallel = max(1, parallel)
        self.criterion = criterion
        cores = _cores()
        per = max(1, len(cores) // self.parallel)
        # Worker w's trials run on their own cores: two trials never compete for one core.
        self.cores = [cores[w * per:(w + 1) * per] or cores for w in range(self.parallel)]
        self.lock = threading.Lock()  # scoring loads data and models: one at a time
        self.domains = None
        self.failed: list[str] = []
        self.procs: set = set()
        self.stopping = False

    def work(self):
        threads = [threading.Thread(target=self._worker, args=(w,), daemon=True) for w in range(self.parallel)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)  # (a bare join would not let Ctrl-C through)
        except BaseException:
            # Stopped (Ctrl-C): the trials' runs stop with their last checkpoint and stay
            # RUNNING in the study, so the next `kerastl sweep` resumes them.
            self.stopping = True
            for proc in list(self.procs):
                proc.terminate()
            for proc in list(self.procs):
                proc.wait()
            raise

    def _worker(self, w: int):
        from optuna.trial import TrialState

        while True:
            studies.reap_stale(self.study, self.plan, echo=self.echo)
            if not studies.counts(self.study)["WAITING"]:
                return
            trial = self.study.ask()
            if "planned" not in trial.user_attrs:  # another process took the last waiting one first
                trial.set_user_attr("unplanned", True)
                self.study.tell(trial, state=TrialState.PRUNED)
                continue
            self._run(trial, self.cores[w])

    def _run(self, trial, cores: list[int]):
        from optuna.trial import TrialState

        name = trial.user_attrs["run"]
        config = trial.suggest_categorical("config", list(self.plan.configs))
        seed = trial.suggest_int("seed", 0, 2**31 - 1)
        method = self.plan.method(config)
        values = {}
        for dim in self.plan.dimensions:
            d = dim.for_method(method)
            if d is None:
                continue
            key = d.optuna_name(method) if dim.declared else d.key
            if d.choices:
                values[d.key] = trial.suggest_categorical(key, list(d.choices))
            elif d.is_int:
                values[d.key] = trial.suggest_int(key, d.low, d.high, log=d.log)
            else:
                values[d.key] = trial.suggest_float(key, float(d.low), float(d.high), log=d.log)
        self.plan.trial_config(config, seed, values)  # validated again before it runs
        trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        trial.set_user_attr("method", method)
        run_dir = self.dir / studies.TRIALS / name
        self.echo(f"{name} {config} seed {seed}{_describe(values)}: "
                  f"{'resuming' if (run_dir / runs.CONFIG).exists() else 'started'} "
                  f"(log: {self.dir / studies.LOGS / (name + '.log')})")
        started = time.time()
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(trial, stop), daemon=True)
        beat.start()
        try:
            rc = self._train(run_dir, config, seed, values, cores, name)
        finally:
            stop.set()
        seconds = time.time() - started
        if rc is None:  # this process is stopping: the trial stays RUNNING, to be resumed
            return
        if rc != 0 or not runs.is_run_dir(run_dir):
            tail = _tail(self.dir / studies.LOGS / f"{name}.log")
            trial.set_user_attr("error", tail)
            self.study.tell(trial, state=TrialState.FAIL)
            self.failed.append(name)
            self.echo(f"{name} ({config}, seed {seed}) failed after {seconds:.0f} s:\n{tail}")
            return
        with self.lock:
            scores = self._score(run_dir)
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("seconds", round(seconds, 1))
        value = scores.get("im")
        if value is None or value != value:
            trial.set_user_attr("error", "no label-free score: the model's outputs are not finite")
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, value)
        c = studies.counts(self.study)
        done = c["COMPLETE"] + c["FAIL"]
        oracle = f", target test {scores['oracle']:.4f}" if "oracle" in scores else ""
        self.echo(f"[{done}/{self.plan.trials}] {name} {config} seed {seed}{_describe(values)}: "
                  f"im {scores.get('im', float('nan')):.3f}{oracle} ({seconds:.0f} s); "
                  f"{c['RUNNING']} running, {c['WAITING']} waiting")

    def _train(self, run_dir: Path, config: str, seed: int, values: dict, cores: list[int], name: str):
        """`kerastl train` of one trial (or `--resume` of its run); its return code, or None
        when this process is being stopped."""
        if runs.is_run_dir(run_dir) and (run_dir / runs.METRICS).exists():
            return 0  # trained before its process stopped: only scoring was left
        cmd = [sys.executable, "-m", "kerastl", "train", "--quiet"]
        if (run_dir / runs.CONFIG).exists():
            cmd += ["--resume", str(run_dir)]
        else:
            cmd += [str(self.dir / "configs" / f"{config}.yaml"), "--out", str(run_dir),
                    "--set", f"seed={seed}", "--set", f"name={name}"]
            cmd += [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]
            threads = self.plan.configs[config]["train"].get("intra_op_threads") or len(cores)
            cmd += ["--set", f"train.intra_op_threads={min(threads, len(cores))}",
                    "--set", f"train.inter_op_threads={len(cores)}"]
        logs = self.dir / studies.LOGS
        logs.mkdir(exist_ok=True)
        with open(logs / f"{name}.log", "a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_child(cores),
                                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            self.procs.add(proc)
            rc = proc.wait()
            self.procs.discard(proc)
            return None if self.stopping else rc

    def _score(self, run_dir: Path) -> dict:
        from kerastl.sweep.scoring import own_scores, trial_outputs

        cfg = runs.read_config(run_dir)
        if self.domains is None:
            self.domains = load_domains(cfg)
        return own_scores(trial_outputs(run_dir, self.domains, cfg.train.batch_size), seed=cfg.data_seed)


def _describe(values: dict) -> str:
    """ lr=0.0035 max_lambda=0.3: a trial's drawn values, short."""
    return "".join(f" {k.split('.')[-1].split('@')[0]}={v:.4g}" if isinstance(v, float) else
                   f" {k.split('.')[-1].split('@')[0]}={v}" for k, v in values.items())


def _heartbeat(trial, stop: threading.Event):
    while not stop.wait(studies.HEARTBEAT):
        try:
            trial.set_user_attr("alive_at", time.time())
        except Exception as err:  # noqa: BLE001 (a missed heartbeat must not stop the trial)
            log.warning("sweep heartbeat not recorded: %s", err)


def _child(cores: list[int]):
    """Runs in the trial's process before it starts: its cores, and (Linux) a SIGTERM when
    the sweep process dies, so no orphaned run keeps writing a run another process resumes."""

    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: nothing is imported after fork

    def setup():
        os.setsid()  # Ctrl-C in the terminal reaches the sweep, which stops its trials itself
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])
