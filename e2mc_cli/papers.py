"""The papers sslboost cites: one table, ``PAPERS[key]``, read by docstrings, tables and model cards.

Each entry is a :class:`Paper` (title, authors, year, venue, link to arXiv, a DOI or the official
page). :meth:`Paper.short` is the name tables show ("Chakraborty et al., AISTATS 2025");
:meth:`Paper.markdown` the full reference a model card shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2mc_cli.errors import UserError

ARXIV = "https://arxiv.org/abs/"


@dataclass(frozen=True)
class Paper:
    """One cited work. ``venue`` is written without the year (``"AISTATS"``, ``"submitted to
    ICLR"``); ``link`` is an arXiv, DOI or official URL, or ``""`` where none is public."""

    title: str
    authors: tuple[str, ...]
    year: int
    venue: str
    link: str = ""

    @property
    def arxiv(self) -> str | None:
        """The arXiv identifier of ``link`` (``"2411.15931"``), else ``None``."""
        return self.link[len(ARXIV) :] if self.link.startswith(ARXIV) else None

    @property
    def when(self) -> str:
        """Venue and year: ``"AISTATS 2025"``."""
        return f"{self.venue} {self.year}"

    @property
    def short(self) -> str:
        """``"Chakraborty et al., AISTATS 2025"``, ``"Wang & Isola, ICML 2020"``, ``"Özsoy, …"``."""
        surnames = [a.split()[-1] for a in self.authors]
        who = f"{surnames[0]} et al." if len(surnames) > 2 else " & ".join(surnames)
        return f"{who}, {self.when}"

    def markdown(self) -> str:
        """``Authors, *[Title](link)*, Venue Year, arXiv:id`` (the title is linked when a link exists)."""
        title = f"[{self.title}]({self.link})" if self.link else self.title
        arxiv = f", arXiv:{self.arxiv}" if self.arxiv else ""
        return f"{', '.join(self.authors)}, *{title}*, {self.when}{arxiv}"


PAPERS: dict[str, Paper] = {
    "e2mc": Paper(
        "Improving Pre-trained Self-Supervised Embeddings Through Effective Entropy Maximization",
        ("Deep Chakraborty", "Yann LeCun", "Tim G. J. Rudner", "Erik Learned-Miller"),
        2025,
        "AISTATS",
        ARXIV + "2411.15931",
    ),
    "vicreg": Paper(
        "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
        ("Adrien Bardes", "Jean Ponce", "Yann LeCun"),
        2022,
        "ICLR",
        ARXIV + "2105.04906",
    ),
    "swav": Paper(
        "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
        (
            "Mathilde Caron",
            "Ishan Misra",
            "Julien Mairal",
            "Priya Goyal",
            "Piotr Bojanowski",
            "Armand Joulin",
        ),
        2020,
        "NeurIPS",
        ARXIV + "2006.09882",
    ),
    "simsiam": Paper(
        "Exploring Simple Siamese Representation Learning",
        ("Xinlei Chen", "Kaiming He"),
        2021,
        "CVPR",
        ARXIV + "2011.10566",
    ),
    "uniformity": Paper(
        "Understanding Contrastive Representation Learning through Alignment and Uniformity on the "
        "Hypersphere",
        ("Tongzhou Wang", "Phillip Isola"),
        2020,
        "ICML",
        ARXIV + "2005.10242",
    ),
    "mmcr": Paper(
        "Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations",
        ("Thomas Yerxa", "Yilun Kuang", "Eero Simoncelli", "SueYeon Chung"),
        2023,
        "NeurIPS",
        ARXIV + "2303.03307",
    ),
    "vne": Paper(
        "Formulating a Non-contrastive Loss as a Difference of Entropies Using a Von Neumann Entropy Bound",
        ("Anonymous",),
        2022,
        "submitted to ICLR",
    ),
    "corinfomax-thesis": Paper(
        "Self-Supervised Learning with an Information Maximization Criterion",
        ("Serdar Özsoy",),
        2022,
        "M.Sc. thesis, Koç University",
    ),
    "corinfomax": Paper(
        "Self-Supervised Learning with an Information Maximization Criterion",
        ("Serdar Ozsoy", "Shadi Hamdan", "Sercan Ö. Arik", "Deniz Yuret", "Alper T. Erdogan"),
        2022,
        "NeurIPS",
        ARXIV + "2209.07999",
    ),
    "simmer": Paper(
        "SimMER: Simple Maximization of Entropy and Rank for Self-supervised Representation Learning",
        ("Zhengyu Yang", "Zijian Hu", "Xuefeng Hu", "Ram Nevatia"),
        2022,
        "submitted to ICLR",
        "https://openreview.net/forum?id=77_zstKV8HQ",
    ),
    "stability": Paper(
        "The Common Stability Mechanism behind most Self-Supervised Learning Approaches",
        ("Abhishek Jha", "Matthew B. Blaschko", "Yuki M. Asano", "Tinne Tuytelaars"),
        2024,
        "arXiv",
        ARXIV + "2402.14957",
    ),
    "lars": Paper(
        "Large Batch Training of Convolutional Networks",
        ("Yang You", "Igor Gitman", "Boris Ginsburg"),
        2017,
        "arXiv",
        ARXIV + "1708.03888",
    ),
    "m-spacings": Paper(
        "A Test for Normality Based on Sample Entropy",
        ("Oldrich Vasicek",),
        1976,
        "Journal of the Royal Statistical Society, Series B",
        "https://doi.org/10.1111/j.2517-6161.1976.tb01566.x",
    ),
    "spreading-vectors": Paper(
        "Spreading Vectors for Similarity Search",
        ("Alexandre Sablayrolles", "Matthijs Douze", "Cordelia Schmid", "Hervé Jégou"),
        2019,
        "ICLR",
        ARXIV + "1806.03198",
    ),
    "simclr": Paper(
        "A Simple Framework for Contrastive Learning of Visual Representations",
        ("Ting Chen", "Simon Kornblith", "Mohammad Norouzi", "Geoffrey Hinton"),
        2020,
        "ICML",
        ARXIV + "2002.05709",
    ),
    "instance-discrimination": Paper(
        "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
        ("Zhirong Wu", "Yuanjun Xiong", "Stella X. Yu", "Dahua Lin"),
        2018,
        "CVPR",
        ARXIV + "1805.01978",
    ),
    "fashion-mnist": Paper(
        "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms",
        ("Han Xiao", "Kashif Rasul", "Roland Vollgraf"),
        2017,
        "arXiv",
        ARXIV + "1708.07747",
    ),
    "barlowtwins": Paper(
        "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
        ("Jure Zbontar", "Li Jing", "Ishan Misra", "Yann LeCun", "Stéphane Deny"),
        2021,
        "ICML",
        ARXIV + "2103.03230",
    ),
    "moco": Paper(
        "Momentum Contrast for Unsupervised Visual Representation Learning",
        ("Kaiming He", "Haoqi Fan", "Yuxin Wu", "Saining Xie", "Ross Girshick"),
        2020,
        "CVPR",
        ARXIV + "1911.05722",
    ),
    "mocov2": Paper(
        "Improved Baselines with Momentum Contrastive Learning",
        ("Xinlei Chen", "Haoqi Fan", "Ross Girshick", "Kaiming He"),
        2020,
        "arXiv",
        ARXIV + "2003.04297",
    ),
    "mocov3": Paper(
        "An Empirical Study of Training Self-Supervised Vision Transformers",
        ("Xinlei Chen", "Saining Xie", "Kaiming He"),
        2021,
        "ICCV",
        ARXIV + "2104.02057",
    ),
    "dino": Paper(
        "Emerging Properties in Self-Supervised Vision Transformers",
        (
            "Mathilde Caron",
            "Hugo Touvron",
            "Ishan Misra",
            "Hervé Jégou",
            "Julien Mairal",
            "Piotr Bojanowski",
            "Armand Joulin",
        ),
        2021,
        "ICCV",
        ARXIV + "2104.14294",
    ),
}


def get_paper(key: str) -> Paper:
    """``PAPERS[key]``; an unknown key is a :class:`~e2mc_cli.errors.UserError` listing the keys."""
    try:
        return PAPERS[key]
    except KeyError:
        raise UserError(f"unknown paper {key!r}; expected one of: {', '.join(PAPERS)}") from None
