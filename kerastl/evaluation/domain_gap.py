"""How far apart two domains are in a model's feature space: the proxy A-distance and a
2-D picture of both domains' features (reported before and after adaptation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerastl import runs


def features_of(features_model, split, size, batch, num_classes, limit=600):
    """The features of the first `limit` images of `split`, in order (inference mode)."""
    from kerastl.data.pipeline import build_dataset
    from kerastl.models.inference import outputs

    sub = split.subset(np.arange(min(len(split), limit)))
    return outputs(build_dataset(sub, size, batch, num_classes, cache=False), features_model)[0]


def proxy_a_distance(fs: np.ndarray, ft: np.ndarray, seed: int = 0) -> float:
    """2 (1 - 2 err) of a linear classifier telling the domains apart (Ben-David et al.);
    NaN when a domain has fewer than 2 images (nothing to train and test on)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([fs, ft])
    y = np.concatenate([np.zeros(len(fs)), np.ones(len(ft))])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    half = len(x) // 2
    train, test = order[:half], order[half:]
    if min(len(fs), len(ft)) < 2:
        return float("nan")
    if len(np.unique(y[train])) < 2 or len(np.unique(y[test])) < 2:  # few images: halve each domain
        s, t = rng.permutation(len(fs)), len(fs) + rng.permutation(len(ft))
        train = np.concatenate([s[: len(s) // 2], t[: len(t) // 2]])
        test = np.concatenate([s[len(s) // 2:], t[len(t) // 2:]])
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(x[train]), y[train])
    err = 1.0 - clf.score(scaler.transform(x[test]), y[test])
    return float(2.0 * (1.0 - 2.0 * min(err, 0.5)))


def draw_embedding(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray]]):
    """PNG scatter plots (PCA to 2-D) of source (blue) and target (orange) features."""
    from PIL import Image, ImageDraw

    side, pad = 360, 30
    image = Image.new("RGB", (side * len(panels), side + pad), "white")
    draw = ImageDraw.Draw(image)
    for i, (title, fs, ft) in enumerate(panels):
        x = np.concatenate([fs, ft]).astype(np.float64)
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        # Scale by the 1st-99th percentiles: a few outliers must not squash the rest.
        lo, hi = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
        xy = np.clip((xy - lo) / np.maximum(hi - lo, 1e-9), 0.0, 1.0) * (side - 40) + 20
        x0 = i * side
        draw.text((x0 + 10, 8), title, fill="black")
        for j, (px, py) in enumerate(xy):
            colour = (31, 119, 180) if j < len(fs) else (255, 127, 14)
            draw.ellipse([x0 + px - 2, pad + py - 2, x0 + px + 2, pad + py + 2], fill=colour)
        draw.line([x0, 0, x0, side + pad], fill="grey")
    draw.text((10, side + pad - 14), "blue: source, orange: target (PCA of pooled features)", fill="black")
    runs.atomic_save(path, image.save)
