"""Step 0 of the paper: search a baseline (Tan & Le 2019, Sec. 4), then compound-scale it.

* :mod:`.space`: the factorized hierarchical search space around a baseline (MnasNet);
* :mod:`.reward`: the objective ACC x (MACs / T)^w;
* :mod:`.proxy`: how a candidate is built, measured and trained small;
* :mod:`.search`: the Optuna search on shared storage (`effnet nas`);
* :mod:`.report`: spec.json, trials.csv, the plot and report.md;
* :mod:`.autoscale`: the whole method in one run (`effnet autoscale`).
"""
