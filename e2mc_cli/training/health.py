"""The live collapse alarm of the training loop: a few cheap embedding statistics of each logged
batch (:mod:`e2mc_cli.diagnostics.stats`) and one warning when they say the embedding collapses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from e2mc_cli.diagnostics.stats import SPACES, effective_rank, marginal_entropy, stability_stats


class HealthMonitor:
    """Cheap collapse watch for the training loop (the E2MC paper's entropy and Jha et al.'s centre norm).

    ``update(step, embeddings)`` takes the current batch's views (the embeddings the criterion
    sees) and returns ``{"health/entropy", "health/eff_rank", "health/centre_sq"}``: mean marginal
    entropy of ``Ψ(z)`` and effective rank, averaged over the views, and the centre norm² from the
    first two views (Jha et al., *The Common Stability Mechanism behind most Self-Supervised
    Learning Approaches*, arXiv 2024, https://arxiv.org/abs/2402.14957). It calls
    ``warn(message)`` once per run, the first time
    ``centre_sq`` rises above ``max(centre_threshold, (1 + start)/2)`` (all images drifting to one
    direction; a base whose embedding already starts above the threshold, e.g. a large common
    offset of unnormalised VICReg outputs, must get half-way from its start to 1), the effective rank
    falls below ``rank_fraction`` × its first measured value, or the embeddings are not finite
    (then the returned values are NaN; the monitor itself never raises on a bad batch).
    ``state_dict``/``load_state_dict`` carry the start rank and the warned flag across a resume.
    Call it on one process only under DDP.
    """

    def __init__(
        self,
        space: str,
        warn: Callable[[str], object] | None = None,
        *,
        centre_threshold: float = 0.9,
        rank_fraction: float = 0.5,
    ):
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, not {space!r}")
        self.space = space
        self.warn = warn if warn is not None else (lambda message: None)
        self.centre_threshold = centre_threshold
        self.rank_fraction = rank_fraction
        self.first_rank: float | None = None
        self.first_centre: float | None = None
        self.warned = False

    @torch.no_grad()
    def update(self, step: int, embeddings: Sequence[torch.Tensor]) -> dict[str, float]:
        """The ``health/*`` values of this batch's views; warns once if they say collapse."""
        views = [e.detach().flatten(1) for e in embeddings]
        if not views:
            raise ValueError("HealthMonitor.update needs at least one embedding tensor")
        if views[0].shape[0] < 2:  # one sample: nothing to measure
            nan = float("nan")
            return {"health/entropy": nan, "health/eff_rank": nan, "health/centre_sq": nan}
        if not all(bool(torch.isfinite(v).all()) for v in views):
            nan = float("nan")
            self._warn_once(f"step {step}: the embeddings contain NaN or infinite values")
            return {"health/entropy": nan, "health/eff_rank": nan, "health/centre_sq": nan}
        entropy = sum(float(marginal_entropy(v, self.space).mean()) for v in views) / len(views)
        rank = sum(effective_rank(v) for v in views) / len(views)
        centre = stability_stats(views[0], views[1] if len(views) > 1 else None)["centre_sq"]
        if self.first_rank is None:
            self.first_rank, self.first_centre = rank, centre
        centre_limit = max(self.centre_threshold, (1.0 + self.first_centre) / 2)
        reasons = []
        if centre > centre_limit:
            reasons.append(f"centre norm² {centre:.3f} > {centre_limit:.3g} (start {self.first_centre:.3f})")
        if rank < self.rank_fraction * self.first_rank:
            reasons.append(
                f"effective rank {rank:.1f} < {self.rank_fraction:g} × its start value {self.first_rank:.1f}"
            )
        if reasons:
            self._warn_once(
                f"step {step}: the embedding may be collapsing: {'; '.join(reasons)} "
                f"(marginal entropy {entropy:.3f})"
            )
        return {"health/entropy": entropy, "health/eff_rank": rank, "health/centre_sq": centre}

    def _warn_once(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            self.warn(message)

    def state_dict(self) -> dict:
        """What a resumed run needs: the start values and whether it has warned."""
        return {"first_rank": self.first_rank, "first_centre": self.first_centre, "warned": self.warned}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (a state saved before ``first_centre`` existed starts it at 0)."""
        self.first_rank = state.get("first_rank")
        self.first_centre = state.get("first_centre")
        if self.first_rank is not None and self.first_centre is None:
            self.first_centre = 0.0
        self.warned = bool(state.get("warned", False))
