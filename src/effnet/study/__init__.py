"""The paper's scaling study at proxy scale: Fig. 3, Fig. 7, Fig. 8 / Table 7 and Table 3.

* :mod:`.presets`: bases, budgets, seeds and MAC targets of each preset;
* :mod:`.plan`: every model scaled to its budget by measured MACs;
* :mod:`.run`: training every (budget, model, seed), resumable (`effnet study`);
* :mod:`.stats`: Welch intervals and verdicts, Kendall's tau, flat curves;
* :mod:`.report`, :mod:`.prose`, :mod:`.plots`, :mod:`.cam`: results.json, report.md, figures.
"""
