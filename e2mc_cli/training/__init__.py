"""Continued pre-training: recipes, optimisers, the training loop, its state and its progress display.

- :mod:`~e2mc_cli.training.recipe`: load, resolve, override and write the TOML recipes;
- :mod:`~e2mc_cli.training.optim`: LARS (VICReg), LARC around SGD (SwAV), SGD with a fixed-lr
  group (SimSiam), warm-up + cosine or constant schedules;
- :mod:`~e2mc_cli.training.data`: seeded batches and seeded augmentations (resumable bit for bit);
- :mod:`~e2mc_cli.training.syncbn`: batch norm over the global batch for distributed CPU runs;
- :mod:`~e2mc_cli.training.state`: the training state behind ``--resume``;
- :mod:`~e2mc_cli.training.loop`: ``sslboost continue`` itself;
- :mod:`~e2mc_cli.training.progress`: rich progress bar or plain log lines.

Import the submodules directly (``from e2mc_cli.training.loop import run``).
"""
