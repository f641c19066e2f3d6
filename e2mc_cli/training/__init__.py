"""Continued pre-training: recipes, run setup, state, the step, the loop, outputs and progress.

- :mod:`~e2mc_cli.training.recipe`: load, resolve, override and write the TOML recipes;
- :mod:`~e2mc_cli.training.plan`: :class:`TrainOptions` (what the command asks) and
  :class:`RunPlan` (the resolved run);
- :mod:`~e2mc_cli.training.setup`: :func:`plan_run`, the pure step from options to plan;
- :mod:`~e2mc_cli.training.state`: what a run changes (:class:`TrainState`) and the training state
  file behind ``--resume``;
- :mod:`~e2mc_cli.training.step`: one optimiser step (forward, criterion, backward, update);
- :mod:`~e2mc_cli.training.terms`: a step's loss terms on the device, read by the host one step late;
- :mod:`~e2mc_cli.training.loop`: ``sslboost continue`` itself (loader, steps, logging,
  checkpoints, signals);
- :mod:`~e2mc_cli.training.outputs`: the run folder's files (recipe, metrics, final checkpoint,
  summary);
- :mod:`~e2mc_cli.training.optim`: LARS (VICReg), LARC around SGD (SwAV), SGD with a fixed-lr
  group (SimSiam), warm-up + cosine or constant schedules;
- :mod:`~e2mc_cli.training.data`: seeded batches over a run's global steps (resumable bit for bit),
  the run's one loader and its defaults on a node;
- :mod:`~e2mc_cli.training.syncbn`: batch norm over the global batch for distributed CPU runs;
- :mod:`~e2mc_cli.training.progress`: the start-up header, the live display or plain log lines,
  and the cadence of ``metrics.jsonl``.

Import the submodules directly (``from e2mc_cli.training.loop import run``).
"""
