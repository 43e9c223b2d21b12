"""Transferability scores: how well a pretrained model's features (or predictions) fit a
target's labelled images, without fine-tuning it. Higher is better for each.

- LogME (You et al., ICML 2021): the log marginal evidence of the labels under Bayesian
  linear regression on the features (one-hot labels, one regression per class), with the
  prior and noise precisions set by evidence maximization; per image, averaged over classes.
- H-score (Bao et al., ICIP 2019): tr(cov(f)^-1 cov(E[f | y])), how much of the features'
  variance lies between the classes; cov(f) shrunk (Ledoit-Wolf), as it is singular with
  fewer images than feature dimensions (the few-label case).
- LEEP (Nguyen et al., ICML 2020): the mean log-likelihood of the labels under the source
  classifier's predictions mapped to the target classes by their empirical joint
  distribution; needs a model with a classifier (a kerastl run), not a bare backbone.

All three take numpy arrays and run in well under a second for thousands of images.
"""

from __future__ import annotations

import numpy as np


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 11) -> float:
    """LogME of (N, D) `features` for integer `labels` in [0, C)."""
    f = np.asarray(features, np.float64)
    n, d = f.shape
    # The eigen-decomposition of F^T F serves every class: in its basis the posterior
    # mean and the evidence are sums over the eigenvalues.
    s, v = np.linalg.eigh(f.T @ f)
    s = np.clip(s, 0.0, None)
    evidences = []
    for c in range(int(labels.max()) + 1):
        y = (labels == c).astype(np.float64)
        projected = v.T @ (f.T @ y)
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            gamma = float(np.sum(beta * s / (alpha + beta * s)))
            m = v @ (beta * projected / (alpha + beta * s))
            m2 = float(m @ m)
            residual = float(np.sum((y - f @ m) ** 2))
            new_alpha, new_beta = gamma / max(m2, 1e-12), (n - gamma) / max(residual, 1e-12)
            converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < 0.01
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        m = v @ (beta * projected / (alpha + beta * s))
        m2, residual = float(m @ m), float(np.sum((y - f @ m) ** 2))
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                    - beta / 2 * residual - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score of (N, D) `features` for integer `labels`, with cov(f) shrunk toward a multiple
    of the identity by the Ledoit-Wolf amount a and the between-class covariance scaled by
    1 - a (Ibrahim et al., ICLR 2023): the plain inverse of cov(f) is meaningless with fewer
    images than dimensions, where every features score about C - 1."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    f = np.asarray(features, np.float64)
    f = f - f.mean(axis=0)
    n, d = f.shape
    shrink = float(ledoit_wolf_shrinkage(f, assume_centered=True))
    cov_f = f.T @ f / n
    mu = max(float(np.trace(cov_f)) / d, 1e-12)
    cov_f = (1 - shrink) * cov_f + shrink * mu * np.eye(d)
    class_means = np.zeros_like(f)
    for c in np.unique(labels):
        class_means[labels == c] = f[labels == c].mean(axis=0)
    cov_g = (1 - shrink) * (class_means.T @ class_means / n)
    return float(np.trace(np.linalg.solve(cov_f, cov_g)))


def leep(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of a classifier's (N, C_source) `probabilities` for integer target `labels`."""
    p = np.asarray(probabilities, np.float64)
    classes = int(labels.max()) + 1
    joint = np.stack([p[labels == c].sum(axis=0) for c in range(classes)]) / len(p)  # (C_t, C_s)
    given_source = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-12)  # P(y | z)
    predicted = p @ given_source.T  # (N, C_t)
    return float(np.mean(np.log(np.maximum(predicted[np.arange(len(p)), labels], 1e-12))))


SCORES = {"logme": logme, "h_score": h_score}
