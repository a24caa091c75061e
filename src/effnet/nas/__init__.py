"""Step 0 of the paper: search a baseline (Tan & Le 2019, Sec. 4), then compound-scale it.

* :mod:`.space`: the factorized hierarchical search space around a baseline (MnasNet);
* :mod:`.reward`: the objective ACC x (MACs / T)^w;
* :mod:`.proxy`: how a candidate is built, measured and trained small;
* :mod:`.search`: the Optuna search on shared storage (`effnet nas`);
* :mod:`.trials`: which trials run within a budget, the sampler and successive halving;
* :mod:`.evolution`: regularized evolution as an Optuna sampler (Real et al. 2019);
* :mod:`.pick`: the top k retrained with new seeds, the pick by the mean;
* :mod:`.compare`: seed spread, early-vs-final tau, search against search (bench_nas);
* :mod:`.report`: spec.json, trials.csv, the plot and report.md;
* :mod:`.presets`: how much `effnet nas` and `effnet autoscale` do;
* :mod:`.autoscale`: the whole method in one run (`effnet autoscale`).
"""
