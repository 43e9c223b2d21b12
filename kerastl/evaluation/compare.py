"""Runs side by side: `kerastl runs [DIR]` lists them, `kerastl compare RUN RUN...` puts their
metrics (a terminal table) and their training curves (one HTML page) next to each other.

Only files are read (config.yaml, metrics.json, history.csv, the checkpoint's state): no
TensorFlow, so listing a folder of runs is instant.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import yaml

from kerastl import runs
from kerastl.errors import KerastlError

# Curves compared, whichever the runs have.
CURVES = ["val_accuracy", "loss", "target_test_accuracy", "target_accuracy", "adapt_loss"]


def summarize(run: Path) -> dict:
    """One row about a run directory: what it is, how it did, whether it finished."""
    config = yaml.safe_load((run / runs.CONFIG).read_text()) or {}
    metrics_path = run / runs.METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    state_path = run / runs.CHECKPOINT / "state.json"
    finished = metrics_path.exists() and (run / runs.MODEL).exists()
    adapt = config.get("adapt")
    source, target = config.get("source") or {}, config.get("target") or {}
    when = (metrics_path if finished else run / runs.CONFIG).stat().st_mtime
    return {
        "run": display_name(run),
        "path": str(run),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(when)),
        "backbone": (config.get("model") or {}).get("backbone", "?"),
        "method": ("sweep model (distilled ensemble)" if runs.is_sweep_dir(run.parent)
                   else adapt.get("method", "?") if adapt else ("pretrain + fine-tune" if source else "fine-tune")),
        "data": (f"{source.get('dataset')} -> " if source else "") + str(target.get("dataset", "?")),
        "target_test_accuracy": (metrics.get("target_test") or {}).get("accuracy"),
        "target_val_accuracy": (metrics.get("target_val") or {}).get("accuracy"),
        "source_val_accuracy": (metrics.get("source_val") or {}).get("accuracy"),
        "status": "finished" if finished else ("interrupted" if state_path.exists() else "incomplete"),
        "resumable": (not finished) and state_path.exists(),
    }


def find_runs(root) -> list[Path]:
    """Run directories (a config.yaml inside) in `root` and one level below, oldest first.
    A sweep folder (`kerastl sweep`) stands for its model, or for its trials while it has
    none yet (so a sweep in progress shows); listed itself, for its trials and its model."""
    root = Path(root)
    if not root.is_dir():
        raise KerastlError(f"{root}: no such folder (runs are made in saved_models/ by `kerastl train`)")
    candidates = []
    for p in [root, *sorted(root.iterdir())]:
        if runs.is_sweep_dir(p):
            model = p / "model"
            trials = sorted((p / "trials").iterdir()) if (p / "trials").is_dir() else []
            if p == root:
                candidates += [*trials, model]
            else:
                candidates += [model] if (model / runs.CONFIG).exists() else trials
        elif p == root or not runs.is_sweep_dir(root):
            candidates.append(p)
    found = [p for p in candidates if p.is_dir() and (p / runs.CONFIG).exists()]
    return sorted(found, key=lambda p: (p / runs.CONFIG).stat().st_mtime)


def display_name(run: Path) -> str:
    """A run's name; a sweep's trials and model with the sweep's name before it."""
    run = Path(run)
    if run.parent.name == "trials" and runs.is_sweep_dir(run.parent.parent):
        return f"{run.parent.parent.name}/{run.name}"
    if runs.is_sweep_dir(run.parent):
        return f"{run.parent.name}/{run.name}"
    return run.name


def _pct(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def format_runs(rows: list[dict]) -> str:
    header = ["run", "date", "backbone", "method", "data", "target test", "status"]
    table = [[r["run"], r["date"], r["backbone"], r["method"], r["data"], _pct(r["target_test_accuracy"]),
              r["status"] + (" (resumable: kerastl train --resume)" if r["resumable"] else "")] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *table]]
    return "\n".join(lines)


COMPARED = [("method", "method"), ("backbone", "backbone"), ("data", "data"), ("status", "status"),
            ("target test accuracy", "target_test_accuracy"), ("target val accuracy", "target_val_accuracy"),
            ("source val accuracy", "source_val_accuracy")]


def format_compare(rows: list[dict]) -> str:
    header = ["", *(r["run"] for r in rows)]
    table = [[label, *(_pct(r[key]) if key.endswith("accuracy") else str(r[key]) for r in rows)]
             for label, key in COMPARED]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *table])


def compare_html(run_dirs: list[Path], rows: list[dict]) -> str:
    """One page: the compared metrics and each curve of every run on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerastl.evaluation.plots import png_uri
    from kerastl.evaluation.report import CSS, read_history

    histories = {display_name(run): read_history(run) for run in run_dirs}
    figures = []
    for column in CURVES:
        if not any(column in h for hist in histories.values() for h in hist):
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
        for name, hist in histories.items():
            values = [h[column] for h in hist if column in h]
            if values:
                ax.plot(range(1, len(values) + 1), values, marker=".", label=name)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("epoch (all phases in order)", fontsize=8)
        ax.legend(fontsize=7)
        figures.append(f'<img src="{png_uri(fig)}" alt="{html.escape(column)}">')
    head = "".join(f"<th>{html.escape(r['run'])}</th>" for r in rows)
    body = "".join(
        "<tr><td>" + html.escape(label) + "</td>"
        + "".join(f"<td>{html.escape(_pct(r[key]) if key.endswith('accuracy') else str(r[key]))}</td>" for r in rows)
        + "</tr>" for label, key in COMPARED)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>kerastl compare</title><style>{CSS}"
            f"</style></head><body><h1>kerastl compare</h1><section id=\"metrics\"><table><thead><tr><th></th>"
            f"{head}</tr></thead><tbody>{body}</tbody></table></section><section id=\"curves\">"
            f"{''.join(figures)}</section></body></html>")


def compare(paths, out=None) -> tuple[str, Path]:
    """(terminal table, path of the HTML page written) for the run directories `paths`."""
    run_dirs = []
    for p in paths:
        run = Path(p)
        if runs.is_sweep_dir(run):  # a sweep: its trials and its model
            run_dirs += find_runs(run)
            continue
        if not (run / runs.CONFIG).exists():
            raise KerastlError(f"{p}: not a kerastl run directory (no {runs.CONFIG})")
        run_dirs.append(run)
    rows = [summarize(r) for r in run_dirs]
    path = Path(out) if out else Path("compare.html")
    runs.atomic_write(path, compare_html(run_dirs, rows))
    return format_compare(rows), path
