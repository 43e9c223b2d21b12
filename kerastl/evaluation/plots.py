"""The plots of report.html and compare.html: matplotlib figures (Agg backend, no display)
as PNG data URIs, so a page needs no files beside it."""

from __future__ import annotations

import base64
import io

import numpy as np

WRONG_GRID = 16  # images in the "confidently wrong" grid
EMBED_POINTS = 400  # per domain, for t-SNE

# History columns plotted together, per panel (whatever of them a run has).
PANELS = [
    ("loss", ["loss", "val_loss", "cls_loss", "val_cls_loss", "adapt_loss"]),
    ("accuracy", ["accuracy", "val_accuracy", "source_accuracy", "target_accuracy", "target_test_accuracy",
                  "domain_accuracy", "target_top_class_share"]),
    ("learning rate and lambda", ["lr", "lambda"]),
    ("label-free validators (higher is better)", None),  # every validator_* column
]


def embed_2d(points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of `points` by t-SNE (scikit-learn), or by PCA when t-SNE cannot run."""
    try:
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points), "t-SNE"
    except (ValueError, ImportError):
        centred = points - points.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA"


def _figure(width=6.0, height=3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=80)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_uri(fig) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def curve_plots(history: list[dict]) -> list[tuple[str, str]]:
    """[(title, data URI)] one figure per stage/phase with a panel per group of columns."""
    import matplotlib.pyplot as plt

    out = []
    groups: dict[tuple, list[dict]] = {}
    for row in history:
        groups.setdefault((row.get("stage"), row.get("phase")), []).append(row)
    for (stage, phase), rows in groups.items():
        columns = set().union(*(r.keys() for r in rows))
        panels = []
        for title, names in PANELS:
            names = sorted(c for c in columns if c.startswith("validator_")) if names is None else names
            present = [n for n in names if n in columns and any(np.isfinite(r.get(n, np.nan)) for r in rows)]
            if present:
                panels.append((title, present))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.0), dpi=80, squeeze=False)
        epochs = [r["epoch"] for r in rows]
        for ax, (title, names) in zip(axes[0], panels):
            for n in names:
                ax.plot(epochs, [r.get(n, np.nan) for r in rows], marker=".", label=n.replace("validator_", ""))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        fig.suptitle(f"{stage} / {phase}", fontsize=10)
        out.append((f"{stage} / {phase}", png_uri(fig)))
    return out


def confusion_plot(matrix: np.ndarray, class_names: list[str]) -> str:
    fig, ax = _figure(4.5, 4.0)
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, fontsize=7, rotation=90)
    ax.set_yticks(ticks, class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) <= 20:
        for i in ticks:
            for j in ticks:
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    return png_uri(fig)


def wrong_grid(images, probs, labels, class_names) -> tuple[str | None, int]:
    """The most confidently wrong images as a grid; (data URI or None, how many are wrong)."""
    import matplotlib.pyplot as plt

    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    if not len(wrong):
        return None, 0
    chosen = wrong[np.argsort(-probs[wrong, preds[wrong]])][:WRONG_GRID]
    cols = min(8, len(chosen))
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.45 * rows), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        ax.imshow(images[i])
        ax.set_title(f"{class_names[labels[i]]} -> {class_names[preds[i]]}\n{probs[i, preds[i]]:.2f}", fontsize=6)
    return png_uri(fig), int(len(wrong))


def reliability_plot(cal: dict) -> str:
    fig, ax = _figure(3.6, 3.2)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for b in cal["bins"]:
        ax.bar((b["lo"] + b["hi"]) / 2, b["accuracy"], width=b["hi"] - b["lo"], edgecolor="black",
               color="tab:blue", alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {cal['ece']:.3f}", fontsize=9)
    return png_uri(fig)


def embedding_plot(panels: list[tuple[str, np.ndarray, np.ndarray]], seed: int = 0) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), dpi=80, squeeze=False)
    how = "PCA"
    for ax, (title, fs, ft) in zip(axes[0], panels):
        fs, ft = fs[:EMBED_POINTS], ft[:EMBED_POINTS]
        xy, how = embed_2d(np.concatenate([fs, ft]).astype(np.float64), seed)
        ax.scatter(*xy[: len(fs)].T, s=3, label="source", color="tab:blue")
        ax.scatter(*xy[len(fs):].T, s=3, label="target", color="tab:orange")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7)
    return png_uri(fig), how


def lr_find_png(rates, smoothed, suggestions: dict, title: str) -> bytes:
    """PNG bytes: the smoothed loss against the learning rate (log scale), each suggested
    rate a dashed line."""
    fig, ax = _figure(6.0, 3.6)
    ax.plot(rates, smoothed, color="#1f77b4")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    low, high = min(smoothed), max(smoothed[0], 2 * min(smoothed))
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    for (name, rate), colour in zip(suggestions.items(), ("#d62728", "#2ca02c", "#7f7f7f")):
        ax.axvline(rate, color=colour, linestyle="--", linewidth=1, label=f"{name} {rate:.2e}")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return png_bytes(fig)
