"""The paper's evaluation protocols and the statistics to compare two checkpoints.

- :mod:`~e2mc_cli.evaluate.protocols`: per-method hyperparameters (Appendix B.2 of the E2MC
  paper, Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931).
- :mod:`~e2mc_cli.evaluate.features`: the probes' training transform, data loading, frozen-backbone features.
- :mod:`~e2mc_cli.evaluate.splits`: the data of one evaluation, its transforms and identity.
- :mod:`~e2mc_cli.evaluate.linear`: linear probe (``standard`` and ``cached`` modes; SimSiam's with LARC).
- :mod:`~e2mc_cli.evaluate.semisup`: fine-tuning backbone and classifier.
- :mod:`~e2mc_cli.evaluate.knn`: weighted k-nearest neighbours.
- :mod:`~e2mc_cli.evaluate.scoring`: the classifier scored on the evaluation split after its epochs,
  the best epoch (the authors' reported figure) beside the final one.
- :mod:`~e2mc_cli.evaluate.run`: one evaluation end to end, ``eval.json`` + ``predictions.npz``.
- :mod:`~e2mc_cli.evaluate.records`: the one writer and reader of ``eval.json`` (typed, checked).
- :mod:`~e2mc_cli.evaluate.progress`: progress of feature extraction and classifier epochs.
- :mod:`~e2mc_cli.evaluate.stats` and :mod:`~e2mc_cli.evaluate.compare`: McNemar, paired
  permutation test, Cohen's d (Appendix D.1).
"""
