"""Experiments on top of mei-envs: train agents, compare them with baselines, plot, sweep.

Modules (each imports its heavy dependencies itself, so importing this package is cheap):

* :mod:`experiments.compare`: ``CompareConfig`` and ``run_compare`` (one self-contained run
  folder with episodes, summary statistics and figures).
* :mod:`experiments.sweep`: ``SweepJob``, ``grid`` and ``run_sweep`` (local processes or Ray).
* :mod:`experiments.stats`: rliable aggregates (IQM, mean, optimality gap, probability of
  improvement) and the per-metric summary (mean, std, IQM, bootstrap CIs).
* :mod:`experiments.plot`: ``plot_run`` (compare run folders) and ``plot_zoo`` (rl-zoo logs).
* :mod:`experiments.io`: the one atomic writer, run-folder manifests (``MANIFEST.json``,
  ``COMPLETE``), run-name slugs and version stamps.
* :mod:`experiments.cli`: the ``compare``, ``plot`` and ``sweep`` sub-commands of ``mei-envs``.
"""
