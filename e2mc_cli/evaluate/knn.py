"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al., 2018; common practice).

Features are L2-normalised; for a query ``q`` the ``k`` training features ``t_i`` with the highest
cosine similarity ``s_i = q·t_i`` vote for their class with weight ``exp(s_i / T)``; the class
scores are the summed weights (k = 20, T = 0.07 by default).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


@torch.no_grad()
def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    query_feats: torch.Tensor,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores ``[n_query, num_classes]``: ``Σ_{i ∈ top-k} exp(s_i / T) · onehot(y_i)``."""
    bank = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.long()
    k = min(k, len(bank))
    out = []
    for start in range(0, len(query_feats), chunk):
        q = F.normalize(query_feats[start : start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        scores = torch.zeros(len(q), num_classes)
        scores.scatter_add_(1, labels[idx], weights)
        out.append(scores)
    return torch.cat(out)
