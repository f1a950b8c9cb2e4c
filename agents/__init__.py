"""Stable-Baselines3 training for mei-envs, split by topic as rl-baselines3-zoo does.

* :mod:`~mei_envs.agents.args`: ``TrainArgs`` (no torch import; its field metadata makes the
  ``mei-envs train`` flags).
* :mod:`~mei_envs.agents.hyperparameters`: zoo-format YAML files in ``hyperparams/``.
* :mod:`~mei_envs.agents.envs`: monitored, masked, vectorised training envs.
* :mod:`~mei_envs.agents.callbacks`: seeded evaluation, full checkpoints, metrics, progress.
* :mod:`~mei_envs.agents.files`: models, checkpoints, logs and their trimming on resume.
* :mod:`~mei_envs.agents.train`: ``train(args)``, the run itself.
* :mod:`~mei_envs.agents.algos`, :mod:`~mei_envs.agents.policy`, :mod:`~mei_envs.agents.cli`.
"""
