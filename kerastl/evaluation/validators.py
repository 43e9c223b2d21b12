"""Label-free validators: scores of a model on unlabelled target data, for choosing an
epoch (or hyper-parameters) without target labels.

Every validator here is "higher is better", computed from the model's outputs on images
whose labels are not read:

- `source_val`: accuracy on the labelled source validation split (the classic proxy).
- `entropy`: minus the mean prediction entropy on the target (confident predictions).
- `im`: information maximization, H(mean prediction) - mean H(prediction): confident and
  diverse (Shi & Sha 2012; used as a validator by Musgrave et al. 2022).
- `bnm`: the nuclear norm of the target prediction matrix over the number of images
  (batch nuclear-norm maximization, Cui et al. 2020): confident and diverse.
- `snd`: soft neighbourhood density (Saito et al., ICCV 2021): the mean entropy of each
  target prediction's softmax-weighted similarity to the other target predictions; high
  when the target forms dense clusters.
- `dev`: minus deep embedded validation's risk (You et al., ICML 2019): the source
  validation loss importance-weighted towards the target by a domain classifier on the
  features, with a control variate.

These are numpy functions of predictions and features (the model runs once per epoch on
held-back data, see `training/validation.py`); none imports TensorFlow.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12

# Every validator the runs record, in the order reports show them.
VALIDATORS = ("source_val", "entropy", "im", "bnm", "snd", "dev")


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(p * np.log(p + EPS), axis=-1)


def entropy(pt: np.ndarray) -> float:
    """Minus the mean entropy of the target predictions (N, C)."""
    return float(-np.mean(_entropy(pt)))


def information_maximization(pt: np.ndarray) -> float:
    """H(mean prediction) - mean H(prediction) of the target predictions."""
    return float(_entropy(pt.mean(axis=0)) - np.mean(_entropy(pt)))


def bnm(pt: np.ndarray) -> float:
    """||P||_* / N of the target predictions P (N, C)."""
    return float(np.linalg.svd(pt, compute_uv=False).sum() / len(pt))


def snd(pt: np.ndarray, temperature: float = 0.05) -> float:
    """Soft neighbourhood density of the target predictions (N, C), N >= 2."""
    z = pt / (np.linalg.norm(pt, axis=1, keepdims=True) + EPS)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)  # a point is not its own neighbour
    logits = sim / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return float(np.mean(_entropy(weights)))


def dev(source_features: np.ndarray, source_losses: np.ndarray, target_features: np.ndarray,
        seed: int = 0) -> float:
    """Minus the DEV risk of the source validation split.

    A logistic-regression domain classifier on the features gives each source validation
    image the density ratio w = (n_s / n_t) p(target | x) / p(source | x) (predicted by
    2-fold cross-fitting, so no image is weighted by a classifier that saw it); the risk is
    mean(w l) + eta mean(w) - eta with eta = -Cov(w l, w) / Var(w) (You et al., 2019).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source_features, target_features]).astype(np.float64)
    y = np.concatenate([np.zeros(len(source_features)), np.ones(len(target_features))])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0))
    folds = StratifiedKFold(2, shuffle=True, random_state=seed)
    p_target = cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[: len(source_features), 1]
    p_target = np.clip(p_target, 1e-4, 1 - 1e-4)
    w = (len(source_features) / len(target_features)) * p_target / (1.0 - p_target)
    weighted = w * source_losses
    var = np.var(w, ddof=1)
    eta = -np.cov(weighted, w)[0, 1] / var if var > EPS else 0.0
    return float(-(np.mean(weighted) + eta * np.mean(w) - eta))


def score_all(*, source_probs: np.ndarray, source_labels: np.ndarray, source_features: np.ndarray,
              target_probs: np.ndarray, target_features: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Every validator (higher is better) from one pass over the source validation split
    (labels used: they are the source's) and held-back target images (labels not used).
    NaN for every validator when the model's outputs are not finite (a diverged epoch)."""
    arrays = (source_probs, source_features, target_probs, target_features)
    if not all(np.all(np.isfinite(a)) for a in arrays):
        return {name: float("nan") for name in VALIDATORS}
    losses = -np.log(source_probs[np.arange(len(source_labels)), source_labels] + EPS)
    compute = {
        "source_val": lambda: float(np.mean(np.argmax(source_probs, axis=1) == source_labels)),
        "entropy": lambda: entropy(target_probs),
        "im": lambda: information_maximization(target_probs),
        "bnm": lambda: bnm(target_probs),
        "snd": lambda: snd(target_probs),
        "dev": lambda: dev(source_features, losses, target_features, seed),
    }
    scores = {}
    for name, fn in compute.items():
        try:
            scores[name] = fn()
        except (ValueError, np.linalg.LinAlgError):  # e.g. a degenerate domain classifier fit
            scores[name] = float("nan")
    return scores
