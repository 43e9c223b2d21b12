"""`kerastl sweep`: many adaptation runs, one label-free choice, one model to ship.

    configs + space --plan--> trials (method, seed, sampled values) in an Optuna study
      --study--> each trial an ordinary `kerastl train` run in SWEEP/trials/
      --scoring--> every trial's outputs on the same held-back target images, its
                   label-free criteria (and its target test accuracy, when labelled)
      --ensemble--> the pick, the top trials' averaged predictions, that ensemble
                    distilled into one model (SWEEP/model, an ordinary run directory)
      --report--> SWEEP/results.json, SWEEP/report.html and a terminal table

Optuna keeps the sweep's state (which trials exist, which run, their values), so several
processes, on one machine or several, share one sweep through its storage: a journal file
in the sweep folder by default, a database URL across machines.
"""
