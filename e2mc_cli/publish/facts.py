"""The facts a model card states about methods, criteria and datasets: papers, code, licences.

Three tables: :data:`METHOD_INFO` (each base method's paper, code and licence),
:data:`CRITERION_INFO` (each add-on criterion's name, formula and paper) and :data:`DATASET_IDS`
(the Hub identity of an evaluation dataset). Read them through :func:`method_facts`,
:func:`criterion_facts` and :func:`dataset_facts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from e2mc_cli.criteria import CRITERIA

__all__ = [
    "CRITERION_INFO",
    "DATASET_IDS",
    "METHOD_INFO",
    "CriterionInfo",
    "MethodInfo",
    "Paper",
    "criterion_facts",
    "dataset_facts",
    "method_facts",
]


@dataclass(frozen=True)
class Paper:
    """A paper as a model card cites it."""

    authors: str
    title: str
    venue: str
    url: str = ""

    def markdown(self) -> str:
        """``authors, *[title](url)*, venue``."""
        title = f"[{self.title}]({self.url})" if self.url else self.title
        return f"{self.authors}, *{title}*, {self.venue}"


@dataclass(frozen=True)
class MethodInfo:
    """A base method: display name, paper, official code and the licence of its weights."""

    name: str
    paper: Paper
    code: str
    license: str  # Hub licence identifier
    license_name: str


@dataclass(frozen=True)
class CriterionInfo:
    """An add-on criterion: display name, formula and paper."""

    name: str
    formula: str  # the add-on term; the training loss is base loss + this term
    paper: Paper


E2MC_PAPER = Paper(
    "Deep Chakraborty, Yann LeCun, Tim G. J. Rudner, Erik Learned-Miller",
    "Improving Pre-trained Self-Supervised Embeddings Through Effective Entropy Maximization",
    "AISTATS 2025, arXiv:2411.15931",
    "https://arxiv.org/abs/2411.15931",
)
VICREG_PAPER = Paper(
    "Adrien Bardes, Jean Ponce, Yann LeCun",
    "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
    "ICLR 2022, arXiv:2105.04906",
    "https://arxiv.org/abs/2105.04906",
)

METHOD_INFO: dict[str, MethodInfo] = {
    "vicreg": MethodInfo("VICReg", VICREG_PAPER, "https://github.com/facebookresearch/vicreg", "mit", "MIT"),
    "swav": MethodInfo(
        "SwAV",
        Paper(
            "Mathilde Caron, Ishan Misra, Julien Mairal, Priya Goyal, Piotr Bojanowski, Armand Joulin",
            "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
            "NeurIPS 2020, arXiv:2006.09882",
            "https://arxiv.org/abs/2006.09882",
        ),
        "https://github.com/facebookresearch/swav",
        "cc-by-nc-4.0",
        "CC-BY-NC 4.0",
    ),
    "simsiam": MethodInfo(
        "SimSiam",
        Paper(
            "Xinlei Chen, Kaiming He",
            "Exploring Simple Siamese Representation Learning",
            "CVPR 2021, arXiv:2011.10566",
            "https://arxiv.org/abs/2011.10566",
        ),
        "https://github.com/facebookresearch/simsiam",
        "cc-by-nc-4.0",
        "CC-BY-NC 4.0",
    ),
}

_CONTINUED = CriterionInfo("continued (no add-on criterion)", "0  (base loss only)", E2MC_PAPER)

# Fallback descriptions; the formula of a criterion registered in e2mc_cli.criteria wins.
CRITERION_INFO: dict[str, CriterionInfo] = {
    "e2mc": CriterionInfo(
        "E2MC (effective entropy maximization criterion)",
        "−β·(1/d)·Σ_j [H_j(Ψ(z_a)) + H_j(Ψ(z_b))] + γ·[C(Ψ(z_a)) + C(Ψ(z_b))];  "
        "H_j: m-spacings entropy of dimension j, C(x) = Σ_{j≠k} Cov(x)_jk² / d, "
        "Ψ: sigmoid (hypercube) or Gaussian CDF (hypersphere)",
        E2MC_PAPER,
    ),
    "continued": _CONTINUED,
    "none": _CONTINUED,
    "vcreg": CriterionInfo(
        "VCReg (VICReg's variance and covariance terms)",
        "μ·Σ_v mean_j relu(1 − sqrt(Var(z_v)_j + 1e-4)) + ν·Σ_v C(z_v),  C(x) = Σ_{j≠k} Cov(x)_jk² / d",
        VICREG_PAPER,
    ),
    "uniformity": CriterionInfo(
        "uniformity (alignment and uniformity on the hypersphere)",
        "λ·Σ_v log mean_{p≠q} exp(−t·‖z_vp − z_vq‖²)",
        Paper(
            "Tongzhou Wang, Phillip Isola",
            "Understanding Contrastive Representation Learning through Alignment and Uniformity "
            "on the Hypersphere",
            "ICML 2020, arXiv:2005.10242",
            "https://arxiv.org/abs/2005.10242",
        ),
    ),
    "mmcr": CriterionInfo(
        "MMCR (maximum manifold capacity representations)",
        "−λ·‖C‖_*,  C = per-image centroid of every crop's normalised embedding",
        Paper(
            "Thomas Yerxa, Yilun Kuang, Eero Simoncelli, SueYeon Chung",
            "Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations",
            "NeurIPS 2023, arXiv:2303.03307",
            "https://arxiv.org/abs/2303.03307",
        ),
    ),
    "vne": CriterionInfo(
        "von Neumann entropy",
        "−coef·½·(S(z_a) + S(z_b)),  S = −Σ λ log λ over the eigenvalues of uᵀu / n, u = z / ‖z‖",
        Paper(
            "Anonymous",
            "Formulating a Non-contrastive Loss as a Difference of Entropies Using a Von Neumann "
            "Entropy Bound",
            "ICLR 2022 submission",
        ),
    ),
    "logdet": CriterionInfo(
        "log-determinant (second-order entropy, CorInfoMax)",
        "−coef·(log det(R_a + εI) + log det(R_b + εI)) / d,  R: running covariance of the normalised z",
        Paper(
            "Serdar Özsoy",
            "Self-Supervised Learning with an Information Maximization Criterion",
            "M.Sc. thesis, Koç University, 2022",
        ),
    ),
    "simmer": CriterionInfo(
        "SimMER (nearest-neighbour entropy and rank)",
        "−α_H·mean_b log min_{i≠b} ‖z̄_b − z̄_i‖ − α_R·‖z̄‖_*,  z̄ = view-averaged embedding",
        Paper(
            "Anonymous",
            "SimMER: Simple Maximization of Entropy and Rank for Self-supervised Representation Learning",
            "ICLR 2022 submission",
        ),
    ),
}


# Hub dataset type and display name of the datasets `sslboost eval` reads by name.
DATASET_IDS: dict[str, tuple[str, str]] = {
    "fmnist": ("fashion_mnist", "Fashion-MNIST"),
    "fashion-mnist": ("fashion_mnist", "Fashion-MNIST"),
    "imagenet": ("imagenet-1k", "ImageNet-1k"),
}


def method_facts(method: str) -> MethodInfo:
    """The paper, code and licence of a base method (one of the package's methods)."""
    return METHOD_INFO[method]


def criterion_facts(name: str) -> CriterionInfo:
    """The name, formula and paper of a criterion; the formula of a criterion registered in
    :data:`e2mc_cli.criteria.CRITERIA` wins over the table's."""
    known = CRITERION_INFO.get(name)
    formula = getattr(CRITERIA.get(name), "formula", None) or None
    if known is None:
        return CriterionInfo(name, formula or "see the criterion's documentation", Paper("", name, ""))
    return CriterionInfo(known.name, formula or known.formula, known.paper)


def dataset_facts(dataset: str) -> tuple[str, str]:
    """(Hub dataset type, display name) of an eval dataset spec (a name or a folder)."""
    key = dataset.lower().rstrip("/")
    if key in DATASET_IDS:
        return DATASET_IDS[key]
    name = Path(dataset).name or dataset
    if "imagenet" in name.lower():
        return DATASET_IDS["imagenet"]
    return name, name
