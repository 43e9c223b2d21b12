"""How far apart two domains are in a model's feature space: the proxy A-distance
(reported before and after adaptation; report.html draws the features themselves)."""

from __future__ import annotations

import numpy as np


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
