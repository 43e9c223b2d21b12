"""Classification metrics from predicted probabilities (numpy; per-class metrics and the
confusion matrix from scikit-learn)."""

from __future__ import annotations

import numpy as np


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
    """Rows: true class, columns: predicted class (scikit-learn's)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return sk_confusion_matrix(labels, preds, labels=np.arange(num_classes))


def per_class(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class (scikit-learn's; 0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=np.arange(len(class_names)), zero_division=0)
    return [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    ]


def full_report(probs, labels, class_names, top_k: int = 3) -> dict:
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, len(class_names))
    rows = per_class(labels, preds, class_names)
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
