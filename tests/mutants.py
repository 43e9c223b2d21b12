"""Break each adaptation method's own term, one at a time, and check that the fast tests notice.

    python tests/mutants.py            # every mutant
    python tests/mutants.py dann-zero  # some of them

Each mutant is a text replacement in one method module, applied to a copy of the checkout
in a temporary folder; the tests not marked slow that concern the methods run against
that copy (stopping at the first failure). A mutant that passes them all is a term the
suite does not guard. Prints one line per mutant; exits 1 if any survived.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_method_terms.py", "tests/test_adaptation.py", "tests/test_validators.py",
         "tests/test_adapt_stage.py"]

# name: (file, old text, new text). Each `old` must occur in the file.
MUTANTS = {
    "dann-zero": ("kerastl/adaptation/dann.py", "        return loss, {\"domain_accuracy\"",
                  "        loss = 0.0 * loss\n        return loss, {\"domain_accuracy\""),
    "grl-sign": ("kerastl/models/layers.py", "return -coefficient * upstream", "return coefficient * upstream"),
    "grl-lambda-one": ("kerastl/adaptation/dann.py", "        self.grl.coefficient.assign(lam)",
                       "        self.grl.coefficient.assign(1.0)"),
    "cdan-no-predictions": ("kerastl/adaptation/cdan.py", "outer = tf.einsum(\"bi,bj->bij\", p, f)",
                            "outer = tf.einsum(\"bi,bj->bij\", tf.ones_like(p), f)"),
    "cdan+e-uniform-weights": ("kerastl/adaptation/cdan.py", "w = 1.0 + tf.exp(-tf.stop_gradient(entropy))",
                               "w = 1.0 + 0.0 * entropy"),
    "mdd-zero": ("kerastl/adaptation/mdd.py", "        return loss, {\"lambda\": lam}",
                 "        return 0.0 * loss, {\"lambda\": lam}"),
    "mdd-no-margin": ("kerastl/adaptation/mdd.py", "loss = self.hp[\"margin\"] * tf.reduce_mean(source)",
                      "loss = tf.reduce_mean(source)"),
    "mdd-grl-lambda-one": ("kerastl/adaptation/mdd.py", "        self.grl.coefficient.assign(lam)",
                           "        self.grl.coefficient.assign(1.0)"),
    "wdgrl-zero": ("kerastl/adaptation/wdgrl.py", "        return w, {\"wasserstein\": w}",
                   "        return 0.0 * w, {\"wasserstein\": w}"),
    "wdgrl-no-penalty": ("kerastl/adaptation/wdgrl.py", "+ self.hp[\"gp_weight\"] * penalty", "+ 0.0 * penalty"),
    "wdgrl-critic-untrained": ("kerastl/adaptation/wdgrl.py", "        self.train_critic(fs, ft)\n", ""),
    "dan-zero": ("kerastl/adaptation/statistics.py", "        return loss, {}", "        return 0.0 * loss, {}"),
    "dan-no-probabilities": ("kerastl/adaptation/statistics.py", "        if self.hp[\"on_probabilities\"]:",
                             "        if False:"),
    "coral-no-covariance": ("kerastl/adaptation/statistics.py",
                            "return mean_diff + tf.reduce_mean(tf.square(cov(fs) - cov(ft)))", "return mean_diff"),
    "mcc-zero": ("kerastl/adaptation/mcc.py", "return class_confusion(global_batch(batch.pt), float(self.hp[\"temperature\"])), {}",
                 "return 0.0 * class_confusion(global_batch(batch.pt), float(self.hp[\"temperature\"])), {}"),
    "mcc-no-temperature": ("kerastl/adaptation/mcc.py", "float(self.hp[\"temperature\"])", "2.5"),
    "mme-zero": ("kerastl/adaptation/mme.py", "        return -entropy, {", "        return 0.0 * entropy, {"),
    "mcd-zero": ("kerastl/adaptation/mcd.py", "    return tf.reduce_mean(tf.abs(p1 - p2))",
                 "    return 0.0 * tf.reduce_mean(tf.abs(p1 - p2))"),
    "mcd-no-weight": ("kerastl/adaptation/mcd.py",
                      "return self.adaptation_weight() * discrepancy(p1[1], p2[1]), None",
                      "return self.adapting() * discrepancy(p1[1], p2[1]), None"),
    "adabn-off": ("kerastl/adaptation/adabn.py", "    recalibrates_bn = True", "    recalibrates_bn = False"),
    "oracle-source-labels": ("kerastl/adaptation/baselines.py", "return self.cross_entropy(batch.yt, batch.pt)",
                             "return self.cross_entropy(batch.ys, batch.ps)"),
}


def run(name: str, work: Path) -> tuple[bool, str, float]:
    """(caught, the first failing test or '', seconds) for one mutant."""
    path, old, new = MUTANTS[name]
    text = (ROOT / path).read_text()
    if old not in text:
        raise SystemExit(f"{name}: {old!r} is not in {path}; update the mutant")
    copy = work / name
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "saved_models", "__pycache__", "*.egg-info"))
    (copy / path).write_text(text.replace(old, new, 1))
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-n", "0",
                           "-p", "no:cacheprovider", *TESTS], cwd=copy, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(copy), TF_CPP_MIN_LOG_LEVEL="2"))
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    shutil.rmtree(copy, ignore_errors=True)
    return proc.returncode != 0, (failed[0] if failed else ""), time.time() - start


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise SystemExit(f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(MUTANTS)}")
    survivors = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or list(MUTANTS):
            caught, first, seconds = run(name, Path(tmp))
            print(f"{name:26s} {'caught' if caught else 'SURVIVED':8s} {seconds:5.0f} s  {first}", flush=True)
            if not caught:
                survivors.append(name)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
