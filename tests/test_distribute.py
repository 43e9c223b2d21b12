"""tf.distribute: 2-replica equivalence, strategies from the config, mixed precision, XLA."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


METHODS = ["finetune", "source_only", "target_oracle", "dann", "cdan", "cdan+e", "mdd", "mcd", "wdgrl",
           "deep_coral", "dan"]


@pytest.fixture(scope="module")
def replica_steps(tmp_path_factory):
    """One subprocess (two logical CPU devices need a fresh TensorFlow) for all methods."""
    out = tmp_path_factory.mktemp("replicas")
    proc = subprocess.run([sys.executable, str(HERE / "replica_step.py"), str(out), *METHODS],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("method", METHODS)
def test_one_step_on_two_replicas_equals_one_step_on_one_device(method, replica_steps):
    with np.load(replica_steps / f"{method}.npz") as f:
        n = int(f["n"])
        one = [f[f"arr_{i}"] for i in range(n)]
        two = [f[f"arr_{i}"] for i in range(n, 2 * n)]
        initial = [f[f"arr_{i}"] for i in range(2 * n, 3 * n)]
        names = [str(x) for x in f["names"]]
    moved = max(float(np.max(np.abs(a - i))) for a, i in zip(one, initial) if a.size)
    assert moved > 0.01  # the step did change the weights
    for name, a, b in zip(names, one, two):
        # float32 sums in another order (and E[x^2]-E[x]^2 for synchronized BN variance)
        np.testing.assert_allclose(b, a, atol=2e-4, rtol=1e-3, err_msg=name)
