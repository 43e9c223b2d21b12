"""Classification metrics computed from predicted probabilities, with numpy."""

from __future__ import annotations

import numpy as np


def predict_split(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, integer labels) of a batched (x, one-hot y) dataset."""
    probs, labels = [], []
    for batch in dataset:
        x, y = batch[0], batch[1]
        probs.append(np.asarray(model(x, training=False)))
        labels.append(np.argmax(np.asarray(y), axis=-1))
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(probs), np.concatenate(labels)


def summary_metrics(probs: np.ndarray, labels: np.ndarray, top_k: int = 3) -> dict:
    """accuracy, loss (cross-entropy), top-k accuracy and the number of examples."""
    n, k = probs.shape
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(n), labels], eps, 1.0))))
    top_k = min(top_k, k)
    top = np.argsort(-probs, axis=1)[:, :top_k]
    return {
        "accuracy": float(np.mean(top[:, 0] == labels)),
        "loss": loss,
        f"top_{top_k}_accuracy": float(np.mean(np.any(top == labels[:, None], axis=1))),
        "num_examples": int(n),
    }


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class(cm: np.ndarray, class_names: list[str]) -> list[dict]:
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, actual)
    ]


def full_report(probs, labels, class_names, top_k: int = 3) -> dict:
    cm = confusion_matrix(labels, probs.argmax(axis=1), len(class_names))
    rows = per_class(cm, class_names)
    report = summary_metrics(probs, labels, top_k)
    report["macro_f1"] = float(np.mean([r["f1"] for r in rows]))
    report["per_class"] = rows
    report["confusion_matrix"] = cm.tolist()
    return report


def format_report(report: dict, class_names: list[str], title: str) -> str:
    lines = [title]
    keys = [k for k in report if k not in ("per_class", "confusion_matrix")]
    lines.append("  " + "  ".join(f"{k}={report[k]:.4f}" if isinstance(report[k], float) else f"{k}={report[k]}" for k in keys))
    width = max(8, max(len(c) for c in class_names) + 1)
    lines.append(f"  {'class':<{width}} precision  recall     f1  support")
    for r in report["per_class"]:
        lines.append(
            f"  {r['class']:<{width}} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['support']:8d}"
        )
    cm = np.asarray(report["confusion_matrix"])
    cell = max(4, len(str(cm.max())) + 1)
    short = [c[: cell - 1] for c in class_names]
    lines.append("  confusion matrix (rows: true, columns: predicted)")
    lines.append("  " + " " * width + "".join(f"{c:>{cell}}" for c in short))
    for name, row in zip(class_names, cm):
        lines.append(f"  {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
