"""`kerastl report RUN`: one self-contained HTML page of a run (`RUN/report.html`).

Everything is inside the file (plots are PNGs embedded as data URIs), so it can be mailed
or attached to a ticket. Sections, each an element with its id:

    config       the resolved config
    data         images per class per split, skipped files and why
    curves       training curves per stage/phase (losses, accuracies, learning rate; for
                 adaptation also the adaptation loss, domain accuracy, lambda, the share of
                 the top target class and the label-free validators next to target accuracy)
    metrics      final metrics per split (the numbers of metrics.json)
    per-class    precision / recall / F1 per class on the target test split
    confusion    the confusion matrix
    wrong        the most confidently wrong target test images, true and predicted labels
    calibration  reliability diagram and expected calibration error
    embedding    adapted runs: source and target features before and after (t-SNE; PCA
                 when t-SNE cannot run) and the proxy A-distance
    exports      the exports table, when the run has exports

Plots use matplotlib's Agg backend (no display needed). Every number shown in the metrics
table carries a `data-metric` attribute naming its metrics.json key, which the tests use
to check the page against the file.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.evaluation.plots import (EMBED_POINTS, WRONG_GRID, confusion_plot, curve_plots, embedding_plot,
                                      reliability_plot, wrong_grid)

REPORT = "report.html"

# --- collecting ---------------------------------------------------------------------

def read_history(run: Path) -> list[dict]:
    path = run / runs.HISTORY
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (_number(v) if k not in ("stage", "phase") else v) for k, v in row.items()})
    return rows


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def class_counts(domain) -> dict:
    """{split: [images per class]} of a DomainData (labels only, no image is read)."""
    out = {}
    for name, split in domain.splits.items():
        if name == "pool":
            continue
        labels = np.asarray(split.labels, int)
        # Images without labels (an unlabelled adaptation target) are counted in no class.
        out[name] = np.bincount(labels[labels >= 0], minlength=domain.num_classes).tolist() + \
            ([int(np.sum(labels < 0))] if not domain.labelled else [])
    return out


def predictions(model, split, batch: int, num_classes: int):
    """(uint8 images, probabilities, labels) of a split."""
    from kerastl.data.pipeline import build_dataset
    from kerastl.models.inference import over_dataset

    size = int(model.input_shape[1])
    result = over_dataset(build_dataset(split, size, batch, num_classes, cache=False), model, keep_images=True)
    return result["images"], result["outputs"], result["labels"]


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    """Reliability bins (confidence, accuracy, count) and the expected calibration error."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        n = int(inside.sum())
        if n:
            acc, mean_conf = float(correct[inside].mean()), float(conf[inside].mean())
            ece += n / len(conf) * abs(acc - mean_conf)
            rows.append({"lo": float(lo), "hi": float(hi), "confidence": mean_conf, "accuracy": acc, "count": n})
    return {"bins": rows, "ece": float(ece)}


# --- the page ---------------------------------------------------------------------------

def _table(header: list[str], rows: list[list], attrs: list[list[str]] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            attr = attrs[i][j] if attrs and attrs[i][j] else ""
            cells.append(f"<td{attr}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8em;font-size:.8em;overflow:auto}img{max-width:100%;margin:.3em 0}
.note{color:#666;font-size:.85em}"""


def build_html(run: Path, *, config_text: str, metrics: dict, history: list[dict], data: dict,
               class_names: list[str], test: tuple | None, embedding: list | None, exports: dict | None,
               skipped: list | None = None, seed: int = 0) -> str:
    from kerastl.evaluation.metrics import confusion_matrix, per_class

    sections = []

    def section(sid, title, body):
        sections.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>')

    section("config", "Config", f"<pre>{html.escape(config_text)}</pre>")

    # Data
    parts = []
    for domain, info in data.items():
        splits = info["splits"]
        header = ["class", *splits]
        rows = [[name, *(splits[s][c] for s in splits)] for c, name in enumerate(class_names)]
        if any(len(counts) > len(class_names) for counts in splits.values()):
            rows.append(["(no label)", *(counts[-1] for counts in splits.values())])
        rows.append(["all", *(sum(splits[s]) for s in splits)])
        parts.append(f"<h3>{html.escape(domain)}: {html.escape(info['name'])}</h3>" + _table(header, rows))
    skipped = skipped or []
    parts.append(f"<p>{len(skipped)} file(s) skipped" + (":" if skipped else ".") + "</p>")
    if skipped:
        parts.append(_table(["file", "reason"], skipped[:200]))
    section("data", "Data", "".join(parts))

    # Curves
    plots = curve_plots(history)
    section("curves", "Training curves",
            "".join(_img(uri, f"curves {title}") for title, uri in plots) or "<p>No history.</p>")

    # Metrics
    splits = [k for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v]
    keys = ["accuracy", "loss", *sorted({k for s in splits for k in metrics[s]} - {"accuracy", "loss"})]
    rows, attrs = [], []
    for s in splits:
        rows.append([s, *(_fmt(metrics[s].get(k, "")) for k in keys)])
        attrs.append(["", *(f' data-metric="{s}.{k}"' if k in metrics[s] else "" for k in keys)])
    body = _table(["split", *keys], rows, attrs)
    adaptation = metrics.get("adaptation")
    if adaptation:
        sel = adaptation.get("selection", {})
        body += (f"<p>Adapted with <b>{html.escape(str(adaptation.get('method')))}</b>; kept epoch "
                 f"<span data-metric=\"adaptation.selection.epoch\">{sel.get('epoch')}</span> by "
                 f"{html.escape(str(sel.get('criterion')))}.</p>")
        chosen = adaptation.get("validators") or {}
        if chosen:
            body += "<p>Each label-free validator's choice of epoch and the target test accuracy there:</p>"
            body += _table(["validator", "epoch", "target test accuracy"],
                           [[n, c["epoch"], _fmt(c.get("target_test_accuracy"))] for n, c in chosen.items()])
    section("metrics", "Final metrics", body)

    # Target test split: per class, confusion, wrong, calibration
    if test is not None:
        images, probs, labels = test
        preds = probs.argmax(axis=1)
        pc = per_class(labels, preds, class_names)
        section("per-class", "Per class (target test split)",
                _table(["class", "precision", "recall", "f1", "support"],
                       [[r["class"], _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["f1"]), r["support"]]
                        for r in pc]))
        cm = confusion_matrix(labels, preds, len(class_names))
        section("confusion", "Confusion matrix (target test split)",
                _img(confusion_plot(cm, class_names), "confusion matrix"))
        grid, n_wrong = wrong_grid(images, probs, labels, class_names)
        section("wrong", "Most confidently wrong (target test split)",
                f"<p>{n_wrong} of {len(labels)} wrong; the {min(n_wrong, WRONG_GRID)} most confident, "
                "as true -> predicted (probability):</p>" + (_img(grid, "confidently wrong images") if grid else ""))
        cal = calibration(probs, labels)
        section("calibration", "Calibration (target test split)",
                _img(reliability_plot(cal), "reliability diagram")
                + f'<p>Expected calibration error: <span data-ece="1">{cal["ece"]:.4f}</span> (10 bins).</p>')

    # Embedding
    if embedding:
        uri, how = embedding_plot(embedding, seed)
        pad = []
        if adaptation:
            for when in ("before", "after"):
                v = adaptation.get(f"proxy_a_distance_{when}")
                if v is not None:
                    pad.append(f'{when} <span data-metric="adaptation.proxy_a_distance_{when}">{v:.4f}</span>')
        section("embedding", "Source and target features",
                _img(uri, "feature embedding") + f"<p class=note>{how} of the classifier's features "
                f"(up to {EMBED_POINTS} images per domain). Proxy A-distance: {', '.join(pad) or '-'} "
                "(0: the domains are indistinguishable, 2: a linear classifier tells them apart).</p>")

    # Exports
    if exports:
        rows = [[key, r.get("format"), r.get("size_mb"), "reference" if r.get("agreement") is None
                 else _fmt(r["agreement"]), _fmt(r.get("accuracy")), r.get("latency_ms"), r.get("images"),
                 r.get("calibration") or "-"]
                for key, r in exports.items()]
        section("exports", "Exports", _table(["file", "format", "size MB", "agreement", "accuracy",
                                              "ms/image", "checked on", "int8 calibrated on"], rows))

    title = f"kerastl run {run.name}"
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=note>{html.escape(str(run))}</p>{''.join(sections)}</body></html>")


def write_report(run_dir, *, cfg=None, model=None, source=None, target=None) -> Path:
    """Writes RUN/report.html. The job passes what it has in memory; `kerastl report` reads
    the run's config and model and loads its data again."""
    from kerastl.data.domain import load_domain
    from kerastl.export.verify import read_rows

    run = runs.require_run(run_dir, need=(runs.MODEL, runs.CONFIG, runs.METRICS))
    cfg = cfg or runs.read_config(run)
    model = model or runs.load_model(run)
    if target is None:
        target = load_domain(cfg.target, cfg.data_seed, "target")
        if cfg.source is not None:
            source = load_domain(cfg.source, cfg.data_seed, "source")
    metrics = json.loads((run / runs.METRICS).read_text())
    data = {"target": {"name": target.name, "splits": class_counts(target)}}
    if source is not None:
        data = {"source": {"name": source.name, "splits": class_counts(source)}, **data}
    skipped_path = run / runs.SKIPPED
    skipped = [line.split("\t", 1) for line in skipped_path.read_text().splitlines() if line.strip()] \
        if skipped_path.exists() else []
    test_split = target.splits.get("test")
    test = predictions(model, test_split, cfg.train.batch_size, target.num_classes) \
        if test_split is not None and len(test_split) else None

    embedding = None
    before_path = run / "features_before.npz"
    if metrics.get("adaptation") and before_path.exists() and source is not None:
        from kerastl.evaluation.domain_gap import features_of
        from kerastl.models.factory import features_model

        with np.load(before_path) as f:
            before = (f["source"], f["target"])
        feats = features_model(model)
        size = int(model.input_shape[1])
        src_eval = source.splits.get("test") or source.splits.get("val") or source.splits["train"]
        tgt_eval = target.splits.get("test") or target.splits["train"]
        after = (features_of(feats, src_eval, size, cfg.train.batch_size, source.num_classes),
                 features_of(feats, tgt_eval, size, cfg.train.batch_size, target.num_classes))
        embedding = [("before adaptation", *before), ("after", *after)]

    exports = read_rows(run) or None
    page = build_html(run, config_text=(run / runs.CONFIG).read_text(), metrics=metrics,
                      history=read_history(run), data=data, class_names=runs.read_labels(run), test=test,
                      embedding=embedding, exports=exports, skipped=skipped, seed=cfg.seed)
    path = run / REPORT
    runs.atomic_write(path, page)
    return path
