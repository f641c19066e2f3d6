"""Batch norm with statistics over the whole global batch, for distributed runs.

The official VICReg, SwAV and SimSiam code convert every BatchNorm to ``nn.SyncBatchNorm`` so
that a run on k processes × n/k images normalises exactly like one process × n images. PyTorch's
``SyncBatchNorm`` only runs on accelerators; :class:`GlobalBatchNorm` does the same with two
differentiable all-reduces (sum, then sum of squared deviations), so CPU runs under gloo keep
that equivalence. :func:`convert_sync_batchnorm` picks PyTorch's on CUDA and this one elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.nn.functional import all_reduce

from e2mc_cli.distributed import is_distributed


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the concatenation of every process's batch (any input rank ≥ 2).

    ``mean = Σ_r Σ x / N``, ``var = Σ_r Σ (x − mean)² / N`` (biased, used to normalise);
    running statistics take the unbiased ``var · N / (N − 1)`` as ``nn.BatchNorm``. Gradients flow
    through both all-reduces, so the backward pass is that of one batch norm over all N samples.
    Outside training, or without a process group, it is an ordinary batch norm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        total = all_reduce(torch.cat([xf.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = xf - mean.reshape(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm of ``module`` made global-batch: ``nn.SyncBatchNorm`` on CUDA,
    :class:`GlobalBatchNorm` elsewhere (parameters and buffers carried over, same state-dict keys)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out
