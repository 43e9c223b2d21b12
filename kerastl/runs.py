"""Run directories: where a run's config, model, metrics and checkpoints live.

    saved_models/<name>-<YYYYmmdd-HHMMSS>/
      config.yaml        the fully resolved config (repeat the run with it)
      model.keras        the trained classifier (plain Keras layers, safe_mode loadable)
      labels.txt         class names, one per line, in output order
      metrics.json       per split (source_val, target_val, target_test): accuracy, loss, ...
      history.csv        one row per epoch of every stage and phase
      skipped_files.txt  images that could not be decoded and were left out
      logs/              TensorBoard logs
      checkpoint/        last completed epoch (weights, optimizer state, progress), for --resume
      serving/<version>/ SavedModels for TF Serving (`kerastl export`)
      model*.tflite, model.onnx   converted models (`kerastl convert`)
      exports.json, exports.txt   how each export compared with model.keras

A sweep (`kerastl sweep`, see kerastl/sweep/runner.py) is a folder holding its plan
(sweep.yaml), its trials as run directories (trials/trial-NNN/) and the run it ships (model/).

Every file is written to a temporary name and renamed into place, so a crash while saving
never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from kerastl.errors import KerastlError

CONFIG = "config.yaml"
MODEL = "model.keras"
LABELS = "labels.txt"
METRICS = "metrics.json"
HISTORY = "history.csv"
SKIPPED = "skipped_files.txt"
CHECKPOINT = "checkpoint"
SWEEP_PLAN = "sweep.yaml"


def atomic_write(path: Path, data: str | bytes):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    # Not tempfile.mkstemp: its files are mode 0600, and the renamed file would keep that;
    # this one gets the mode any new file gets (0666 minus the umask), so others who read
    # the run (a serving host, a colleague) still can.
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(path: Path, save_fn):
    """Calls `save_fn(tmp_path)` and renames the result onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: Keras decides the format from it.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{''.join(path.suffixes)}")
    try:
        save_fn(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_history(run_dir: Path, rows: list[dict]):
    """RUN/history.csv: one row per epoch, columns in order of first appearance."""
    import csv
    import io

    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(run_dir) / HISTORY, buf.getvalue())


def write_json(path: Path, obj):
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def update_json(path: Path, key: str, value) -> dict:
    """Sets `key` in the JSON object at `path` (a missing or unreadable file starts empty;
    `value` None removes the key), writes it atomically and returns the whole object."""
    path = Path(path)
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    write_json(path, data)
    return data


def new_run_dir(name: str, out: str | None) -> Path:
    if out:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise KerastlError(
                f"--out {out}: the folder exists and is not empty; choose a new folder "
                "(or continue that run with --resume)"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("saved_models") / f"{name}-{stamp}"
        i = 1
        while path.exists():
            path = Path("saved_models") / f"{name}-{stamp}-{i}"
            i += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_run(path: str | Path, need=(MODEL,)) -> Path:
    run = Path(path)
    if not run.is_dir():
        raise KerastlError(f"{path}: no such run directory")
    for name in need:
        if not (run / name).exists():
            raise KerastlError(
                f"{path}: not a finished kerastl run ({name} is missing); "
                "runs are made by `kerastl train`"
            )
    return run


def read_labels(run: Path) -> list[str]:
    return [line for line in (run / LABELS).read_text().splitlines() if line]


def is_sweep_dir(path) -> bool:
    """A `kerastl sweep` folder: it holds the sweep's plan (trials/ holds its runs, model/
    the run it ships)."""
    return (Path(path) / SWEEP_PLAN).is_file()


def is_run_dir(path) -> bool:
    """A finished kerastl run: it holds model.keras and config.yaml."""
    p = Path(path)
    return p.is_dir() and (p / MODEL).exists() and (p / CONFIG).exists()


def read_config(run):
    """The validated config a run was made with (RUN/config.yaml)."""
    from kerastl.config import load_config

    return load_config(Path(run) / CONFIG)


def load_model(run):
    """RUN/model.keras, loaded in safe mode without compiling."""
    return load_keras(Path(run) / MODEL)


def load_keras(path):
    """A .keras file, loaded without compiling in Keras' safe mode: a file cannot run code
    of its own. A file that would (a Python `Lambda` layer) is refused with one line that
    says so, instead of Keras' traceback."""
    import keras

    from kerastl.errors import ModelError

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        if "safe_mode=False" not in str(err):
            raise
        raise ModelError(
            f"{path}: refused for safety: it holds a Lambda layer with Python code, which would run on "
            "loading, and kerastl loads models in Keras' safe mode (kerastl's own runs never hold one). "
            "Rebuild the model from built-in layers, or load it yourself with "
            "keras.saving.load_model(path, safe_mode=False) if you trust where it came from"
        ) from None
