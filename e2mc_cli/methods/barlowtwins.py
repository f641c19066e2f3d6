"""Barlow Twins as a method module: the cross-correlation loss over two views, the projector and
the affine-free batch norm of the embeddings, the two asymmetric views, and its spec.

Every fact below comes from the official code, facebookresearch/barlowtwins ``main.py`` (classes
``BarlowTwins``, ``LARS``, ``Transform``, ``GaussianBlur``, ``Solarization``; function
``off_diagonal``) at its last commit (8e8d284, 2022-02), and its README.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.distributed.nn.functional import all_reduce

from e2mc_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, REFERENCE_SIZE
from e2mc_cli.data.views import BLUR_SIGMA, ViewRecipe, crop_scale
from e2mc_cli.distributed import is_distributed, world_size
from e2mc_cli.methods.base import Method, MethodOutput, check_views
from e2mc_cli.methods.spec import MethodSpec
from e2mc_cli.methods.vicreg import read_projector_sizes, scaled_projector
from e2mc_cli.models import SSLModel, mlp, parse_dims
from e2mc_cli.precision import full_precision

LAMBD = 0.0051  # main.py --lambd: the weight of the off-diagonal (redundancy) term
BIAS_LR_KEY = "bias_lr"  # the recipe key of the learning rate of biases and norm parameters


def off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square ``d × d`` matrix, flattened, as a view (no copy).

    In the row-major flattening the diagonal entries sit at ``k·(d + 1)``; dropping the last entry
    (itself diagonal) leaves ``d² − 1 = (d − 1)(d + 1)`` entries whose rows of ``d + 1`` each begin
    with a diagonal entry, which the ``[:, 1:]`` drops (as ``off_diagonal`` of ``main.py``).
    """
    d, other = c.shape
    if d != other:
        raise ValueError(f"off_diagonal needs a square matrix, got {d} × {other}")
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def barlow_twins_loss(
    n_a: torch.Tensor, n_b: torch.Tensor, lambd: float = LAMBD
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Barlow Twins' redundancy-reduction loss (Zbontar et al., ICML 2021, Eq. 1; ``main.py``)::

        C = n_aᵀ n_b / N,   L = Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij²

    ``n_a``, ``n_b`` (``n × d`` each) are the two views' embeddings after the affine-free batch norm
    (each dimension standardised over the batch), so ``C`` is their cross-correlation matrix;
    ``N`` is the batch size *of all processes* and λ = 0.0051. Under a process group each process
    holds its shard: ``C`` is the sum of the shards' ``n_aᵀ n_b / N`` (``main.py`` divides by the
    global ``--batch-size``, then ``torch.distributed.all_reduce(c)``), which equals the
    single-process matrix on the concatenated batch. The sum here is autograd-aware (its backward
    sums the gradients over processes), so every process has the same loss and a shard's gradient
    is ``world_size`` times the single-process one, which DistributedDataParallel's averaging
    divides back: the parameter gradients are those of one process on the whole batch, for any
    process count. The official ``all_reduce`` is not autograd-aware; its gradients are those
    divided by the process count (see the class docstring). Computes in float32.

    Returns ``(loss, terms)``: the unweighted ``on_diag`` (invariance) and ``off_diag``
    (redundancy) sums, detached.
    """
    if n_a.shape != n_b.shape or n_a.ndim != 2:
        raise ValueError(
            f"barlow_twins_loss needs two n × d tensors of one shape, got {tuple(n_a.shape)} and "
            f"{tuple(n_b.shape)}"
        )
    c = n_a.float().T @ n_b.float() / (n_a.shape[0] * world_size())
    if is_distributed():
        c = all_reduce(c)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    loss = on_diag + lambd * off_diag
    return loss, {"on_diag": on_diag.detach(), "off_diag": off_diag.detach()}


class BarlowTwins(Method):
    """Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar, Jing, Misra,
    LeCun & Deny, ICML 2021, https://arxiv.org/abs/2103.03230).

    Each view goes through the backbone and the 8192-8192-8192 projector on its own (batch-norm
    statistics per view), then through ``bn``, a ``BatchNorm1d`` without affine parameters, on its
    own: ``bn(z_a)`` then ``bn(z_b)``, as ``BarlowTwins.forward`` of ``main.py``; the loss is
    :func:`barlow_twins_loss` with λ = ``lambd``. ``bn`` is a state module of the model (it has
    running statistics, which the release carries, and no parameters); training always
    normalises with the batch's own statistics. In a distributed run every batch norm, ``bn``
    included, normalises over the global batch (``main.py`` converts the whole model with
    ``nn.SyncBatchNorm.convert_sync_batchnorm``; sslboost does the same for every method).

    An add-on criterion sees the projector outputs ``z_a, z_b``: the embedding the network
    computes, which Barlow Twins does not normalise (``bn`` standardises each dimension over the
    batch inside the loss; it is no projection onto a sphere), in space ``"hypercube"`` as
    VICReg's projector output. The projector's last layer, ``bn`` and the loss compute in float32
    under any autocast (``main.py`` forms ``C`` under fp16 autocast).

    Parameters train in two groups (:meth:`param_groups`), as ``main.py``: the weights at the
    recipe's ``lr``, the biases and batch-norm parameters (the 1-d tensors) at its ``bias_lr``;
    LARS leaves the 1-d ones without weight decay and trust ratio.

    Across processes ``main.py`` sums ``C`` with ``torch.distributed.all_reduce``, which autograd
    does not see: each process back-propagates only its own shard's part of ``C``, and
    DistributedDataParallel then averages, so its gradients are ``1/world_size`` of the gradient
    of its loss (the README's run: 16 GPUs). Here the sum carries gradients, so a run's gradients
    do not depend on its process count and equal the official code's on one process.
    """

    name = "barlowtwins"
    space = "hypercube"

    def __init__(self, model: SSLModel, lambd: float = LAMBD):
        super().__init__(model)
        if "bn" not in model.state_names:
            raise ValueError("Barlow Twins needs a model with its bn (the batch norm of the embeddings)")
        self.lambd = float(lambd)

    def param_groups(self) -> list[dict]:
        """``weights`` (every tensor but the 1-d ones) and ``biases`` (the 1-d ones: biases and
        batch-norm parameters; learning rate ``bias_lr``), each in the order of the parameters, as
        ``param_weights`` / ``param_biases`` of ``main.py``."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"name": "weights", "params": [p for p in params if p.ndim != 1], "fix_lr": False},
            {
                "name": "biases",
                "params": [p for p in params if p.ndim == 1],
                "fix_lr": False,
                "lr_key": BIAS_LR_KEY,
            },
        ]

    def forward(self, images: list[torch.Tensor]) -> MethodOutput:
        check_views(images, 2, "Barlow Twins")
        z_a = self.model.projector(self.model.backbone(images[0]))
        z_b = self.model.projector(self.model.backbone(images[1]))
        with full_precision(z_a.device):
            n_a = self.model.bn(z_a.float())
            n_b = self.model.bn(z_b.float())
            loss, terms = barlow_twins_loss(n_a, n_b, self.lambd)
        views = [z_a, z_b]
        return MethodOutput(loss, terms, views, self.space, views)


def _blur_sigma(px: int) -> tuple[float, float]:
    f = px / REFERENCE_SIZE
    return BLUR_SIGMA[0] * f, BLUR_SIGMA[1] * f


def barlowtwins_recipes(px: int, scale: Sequence[float]) -> list[ViewRecipe]:
    """The two views of ``Transform`` in ``main.py``, in its order: RandomResizedCrop(224,
    bicubic; area share ``scale``, official 0.08–1, aspect 3/4–4/3), horizontal flip p = 0.5,
    ColorJitter(0.4, 0.4, 0.2, 0.1) p = 0.8, grayscale p = 0.2, Gaussian blur σ ~ U(0.1, 2)
    (``random.random() * 1.9 + 0.1``) with p = 1.0 / 0.1, solarisation (``ImageOps.solarize``,
    threshold 128) with p = 0 / 0.2, normalisation with the ImageNet mean and std (0.229, 0.224,
    0.225). ``px`` scales the crop and σ by px / 224."""
    common = dict(
        size=px,
        scale=crop_scale(scale),
        interpolation="bicubic",
        flip_p=0.5,
        jitter_p=0.8,
        jitter=(0.4, 0.4, 0.2, 0.1),
        grayscale_p=0.2,
        blur_sigma=_blur_sigma(px),
        solarize_threshold=128,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return [
        ViewRecipe(**common, blur_p=1.0, solarize_p=0.0),
        ViewRecipe(**common, blur_p=0.1, solarize_p=0.2),
    ]


def _heads(width: int, sizes: Mapping[str, object]) -> dict[str, nn.Module]:
    """The projector ``mlp`` "8192-8192-8192" of ``main.py``: (Linear without bias, BN, ReLU) × 2,
    then a Linear without bias; keys 0, 1, 3, 4, 6."""
    return {"projector": mlp([width, *parse_dims(sizes["mlp"])], hidden_bias=False, out_bias=False)}


def _state(backbone: nn.Module, heads: Mapping[str, nn.Module], sizes: Mapping[str, object]) -> dict:
    """``bn``: ``BatchNorm1d(d, affine=False)`` over the projector's ``d`` outputs (running mean 0,
    variance 1 at the start, as a new ``main.py`` model)."""
    return {"bn": nn.BatchNorm1d(parse_dims(sizes["mlp"])[-1], affine=False)}


SPEC = MethodSpec(
    method=BarlowTwins,
    display_name="Barlow Twins",
    heads={"mlp": "8192-8192-8192"},
    head_builder=_heads,
    head_reader=read_projector_sizes,  # VICReg's projector shape: 8192-8192-8192
    head_scaler=scaled_projector,
    view_builder=barlowtwins_recipes,
    view_options={"scale": (0.08, 1.0)},
    paper="barlowtwins",
    code="https://github.com/facebookresearch/barlowtwins",
    licence="mit",
    licence_name="MIT",
    recipes="barlowtwins",
    # checkpoint.pth {epoch, model, optimizer}: module.backbone.* (torchvision names, no fc),
    # module.projector.{0,1,3,4,6}.*, module.bn.{running_mean, running_var, num_batches_tracked};
    # resnet50.pth: the bare backbone (torchvision names, no fc).
    official_keys=(("projector.", "projector."), ("bn.", "bn."), ("backbone.", "backbone.")),
    state_builder=_state,
)
