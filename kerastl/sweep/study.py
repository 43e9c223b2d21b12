"""The sweep's trials as an Optuna study: created once, joined by any process, resumable.

Why Optuna: its storage is the whole coordination. Any process that opens the same study
(a journal file in the sweep folder on one machine, a database URL across machines) takes
the next waiting trial, with no chief process or port to arrange; finished trials stay
finished when everything is killed; its samplers draw the space's values. (KerasTuner's
distributed mode needs a chief reachable over gRPC and builds models itself, while a trial
here is a whole `kerastl train` run.)

The protocol, on public Optuna calls only:
- the process that creates the study enqueues the planned trials (`enqueue_trial`, each
  with its config and seed) and then marks the study planned; joiners wait for that mark;
- a process takes a waiting trial with `study.ask()` only when one is waiting; a trial that
  `ask()` creates because another process took the last one first is closed at once as
  PRUNED ("unplanned") without training, so the budget is exact;
- a taken trial records its owner (host, pid) and, every minute, a heartbeat; its run is
  `kerastl train` in SWEEP/trials/trial-NNN, its output in SWEEP/logs/trial-NNN.log;
- a RUNNING trial whose owner is gone (same host and the pid is not alive, or no heartbeat
  for STALE_AFTER seconds) is closed as FAIL and enqueued again with the same values and
  run directory, so whoever takes it resumes the run from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from kerastl import runs
from kerastl.errors import KerastlError
from kerastl.sweep.plan import Plan

# A trial's own attributes: its plan index and run folder, who runs it and when it was last
# alive, its scores; a copy of a trial whose process died says which one it resumes.

log = logging.getLogger("kerastl")

JOURNAL = "study.journal"
PLAN = runs.SWEEP_PLAN
TRIALS = "trials"
LOGS = "logs"
RESULTS = "results.json"
LOCK = ".finalize.lock"
HEARTBEAT = 60.0
STALE_AFTER = 600.0


def run_name(number: int) -> str:
    return f"trial-{number:03d}"


def open_storage(sweep_dir: Path, url: str | None):
    """Optuna storage: the journal file in the sweep folder, or the database at `url`."""
    import optuna

    if url:
        try:
            return optuna.storages.RDBStorage(url)
        except ImportError:
            raise KerastlError(f"--storage {mask(url)}: the database's Python driver is not installed; for "
                               "PostgreSQL: pip install 'kerastl[postgres]' (psycopg)") from None
        except Exception as err:  # noqa: BLE001 (SQLAlchemy's errors are many; the message is what counts)
            raise KerastlError(f"--storage {mask(url)}: cannot open the database ({type(err).__name__}: "
                               f"{str(err).splitlines()[0][:300]})") from None
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(Path(sweep_dir) / JOURNAL)
    # The open-file lock works where symlinks do not (some network file systems).
    return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def mask(url: str) -> str:
    """A database URL without its password, for messages."""
    import re

    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def create_or_join(sweep_dir: Path, plan: Plan, storage, study_name: str, echo=print):
    """The study of this sweep: created (and its trials planned) by the first process,
    joined by the others, which must be running the same plan."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=plan.base_seed)
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                                    direction="maximize")
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)
        created = False
    if created:
        study.set_user_attr("fingerprint", plan.fingerprint())
        for i in range(plan.trials):
            study.enqueue_trial(plan.planned(i), user_attrs={"planned": i, "run": run_name(i)})
        study.set_user_attr("planned", plan.trials)
        echo(f"sweep {sweep_dir}: {plan.trials} trials planned")
        return study
    deadline = time.time() + 120
    while "planned" not in study.user_attrs:
        if time.time() > deadline:
            raise KerastlError(f"sweep {study_name}: the study exists but its trials were never planned (the "
                               "process that created it stopped first); remove it, or the sweep folder, and start again")
        time.sleep(1.0)
    if study.user_attrs.get("fingerprint") != plan.fingerprint():
        raise KerastlError(f"sweep {sweep_dir} (study {study_name}) was started with other configs, overrides, "
                           "--trials or --space; run the same command to join it, or choose another --out")
    return study


def counts(study) -> dict:
    return {s.name: len(v) for s, v in by_state(study).items()}


def by_state(study) -> dict:
    """The planned trials by state; a trial closed as FAIL because its process was gone,
    and queued again, counts only as its new copy; `unplanned` ones not at all."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    resumed = {t.user_attrs["resumes"] for t in trials if "resumes" in t.user_attrs}
    out = {s: [] for s in TrialState}
    for t in trials:
        if t.user_attrs.get("unplanned") or t.number in resumed:
            continue
        out[t.state].append(t)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(trial, now: float, host: str) -> bool:
    """Whether a RUNNING trial's process is gone: on this machine, its pid has exited; on
    another, its heartbeat stopped STALE_AFTER seconds ago."""
    owner = trial.user_attrs.get("owner")
    if owner is None:  # taken from the queue, not yet claimed by its process
        return trial.datetime_start is not None and now - trial.datetime_start.timestamp() > STALE_AFTER
    if owner["host"] == host:
        return owner["pid"] != os.getpid() and not _pid_alive(owner["pid"])
    return now - float(trial.user_attrs.get("alive_at", owner["since"])) > STALE_AFTER


def reap_stale(study, plan: Plan, echo=print, now: float | None = None) -> int:
    """Closes the RUNNING trials whose process is gone and enqueues each again (same values,
    same run directory, so whoever takes it resumes the run). Returns how many."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    host = socket.gethostname()
    reaped = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "planned" not in t.user_attrs or not _gone(t, now, host):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # another process closed it first
        i = t.user_attrs["planned"]
        study.enqueue_trial({**plan.planned(i), **t.params},
                            user_attrs={"planned": i, "run": t.user_attrs["run"], "resumes": t.number})
        echo(f"{t.user_attrs['run']}: its process is gone; queued again to resume from its checkpoint")
        reaped += 1
    return reaped
