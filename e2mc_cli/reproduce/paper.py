"""Tables 1 and 3 of the E2MC paper as data: each row's base, criterion, reported protocols and
figures (Chakraborty et al., AISTATS 2025, https://arxiv.org/abs/2411.15931).

Table 1 ("Evaluation on ImageNet"): top-1 (%) on the ImageNet validation set of a linear probe
trained on 1 %, 10 % and 100 % of the labels and of semi-supervised fine-tuning on 1 % and 10 %,
for VICReg (1000 epochs), SwAV (400 and 800 epochs) and SimSiam (100 epochs): each base, continued
with its own loss for 10 epochs (``continued``) and with E2MC (``e2mc``). Mean ± standard error
over three trials; the continued rows report no semi-supervised figures, SimSiam none at all
(its paper gave no semi-supervised setting, App. B.2.2).

Table 3 ("Effect of different continued pre-training criteria"): SwAV 800 continued for 10
epochs with VCReg, MMCR, AUH uniformity and E2MC (App. B.1.2), linear probe at 1 %, 10 %, 100 %.
Its base, continued and E2MC rows carry the same figures as Table 1's SwAV 800 rows: the same runs.

Which file each base row is. The paper names the bases by method and epochs only; the file is
the official checkpoint whose reported linear top-1 (official repositories) is the row's 100 %
figure, which carries no standard error: VICReg 73.20 → ``vicreg`` (the full checkpoint: the
projector is continued too); SwAV 400 74.30 → ``swav400-bs256`` (``swav400``, trained at batch
4096, reports 74.6); SwAV 800 75.30 → ``swav800``; SimSiam 68.37 → ``simsiam100-bs256`` (68.3
reported; the batch-512 ``simsiam100`` 68.1).

Kept as a note: the VICReg base's semi-supervised figures are the authors' own reproduction
(VICReg's paper reports 54.8 and 69.5, which its settings did not give them; App. B.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from e2mc_cli.errors import UserError

LINEAR_LABELS = ("1%", "10%", "100%")
SEMISUP_LABELS = ("1%", "10%")
BASE = "base"  # the id suffix of a row that evaluates the base itself (nothing trained)


def column(protocol: str, labels: str) -> str:
    """A table column: ``linear 1%``, ``semisup 10%`` (the names of :mod:`e2mc_cli.study`)."""
    return f"{protocol} {labels}"


LINEAR_COLUMNS = tuple(column("linear", lab) for lab in LINEAR_LABELS)
SEMISUP_COLUMNS = tuple(column("semisup", lab) for lab in SEMISUP_LABELS)


@dataclass(frozen=True)
class Figure:
    """One reported top-1 (%): the mean and its standard error (``None``: none reported)."""

    mean: float
    se: float | None = None

    def to_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se}


@dataclass(frozen=True)
class PaperRow:
    """One row of a table: ``id`` (``vicreg-e2mc``), ``group`` (the base's name in the paper:
    ``vicreg``, ``swav400``, ``swav800``, ``simsiam``), the row's label and epochs as printed, the
    registry base, the criterion (``None`` for the base itself) and the figures reported
    (column → :class:`Figure`, in table order)."""

    id: str
    group: str
    label: str
    epochs: int
    base: str
    criterion: str | None
    figures: dict[str, Figure] = field(hash=False)
    notes: tuple[str, ...] = ()

    @property
    def trained(self) -> bool:
        """Whether the row continues the base's pre-training (else it evaluates the base)."""
        return self.criterion is not None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.figures)


@dataclass(frozen=True)
class PaperTable:
    """A table of the paper: its number, title and rows."""

    number: int
    title: str
    rows: tuple[PaperRow, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column some row reports, in the table's order."""
        seen = {c for row in self.rows for c in row.columns}
        return tuple(c for c in (*LINEAR_COLUMNS, *SEMISUP_COLUMNS) if c in seen)

    def row(self, row_id: str) -> PaperRow:
        return next(r for r in self.rows if r.id == row_id)

    def find(self, base: str, criterion: str | None) -> PaperRow | None:
        """The row of ``base`` with ``criterion``, if the table has one."""
        return next((r for r in self.rows if (r.base, r.criterion) == (base, criterion)), None)


Cell = tuple[float, float | None]


def _row(
    group: str,
    criterion: str,
    label: str,
    epochs: int,
    base: str,
    linear: tuple[Cell, Cell, Cell],
    semisup: tuple[Cell, Cell] | None = None,
    notes: tuple[str, ...] = (),
) -> PaperRow:
    cells = [*zip(LINEAR_COLUMNS, linear), *(zip(SEMISUP_COLUMNS, semisup) if semisup else ())]
    figures = {col: Figure(mean, se) for col, (mean, se) in cells}
    trained = None if criterion == BASE else criterion
    return PaperRow(f"{group}-{criterion}", group, label, epochs, base, trained, figures, notes)


VICREG_SEMI_NOTE = "semi-supervised: the authors' reproduction (VICReg's paper reports 54.8 and 69.5)"

# Table 1, row by row as printed (top-1 %, ± standard error over three trials).
TABLE1 = PaperTable(
    1,
    "Evaluation on ImageNet",
    (
        _row("vicreg", BASE, "VICReg base", 1000, "vicreg",
             ((53.50, 0.11), (66.57, 0.02), (73.20, None)), ((54.53, 0.12), (67.97, 0.03)),
             (VICREG_SEMI_NOTE,)),
        _row("vicreg", "continued", "VICReg continued", 1010, "vicreg",
             ((53.51, 0.07), (66.57, 0.06), (73.16, 0.02))),
        _row("vicreg", "e2mc", "VICReg + E2MC", 1010, "vicreg",
             ((54.54, 0.05), (66.82, 0.05), (73.45, 0.07)), ((55.05, 0.08), (68.12, 0.04))),
        _row("swav400", BASE, "SwAV base", 400, "swav400-bs256",
             ((52.34, 0.07), (67.61, 0.02), (74.30, None)), ((52.57, 0.15), (69.25, 0.05))),
        _row("swav400", "continued", "SwAV continued", 410, "swav400-bs256",
             ((52.31, 0.07), (67.56, 0.05), (74.31, 0.02))),
        _row("swav400", "e2mc", "SwAV + E2MC", 410, "swav400-bs256",
             ((53.40, 0.01), (67.73, 0.03), (74.44, 0.03)), ((52.70, 0.54), (69.24, 0.02))),
        _row("swav800", BASE, "SwAV base", 800, "swav800",
             ((53.70, 0.05), (68.86, 0.03), (75.30, None)), ((53.89, 0.13), (70.22, 0.05))),
        _row("swav800", "continued", "SwAV continued", 810, "swav800",
             ((53.69, 0.05), (68.87, 0.04), (75.32, 0.01))),
        _row("swav800", "e2mc", "SwAV + E2MC", 810, "swav800",
             ((55.27, 0.07), (68.98, 0.02), (75.41, 0.02)), ((53.94, 0.30), (70.32, 0.05))),
        _row("simsiam", BASE, "SimSiam base", 100, "simsiam100-bs256",
             ((43.71, 0.04), (60.15, 0.02), (68.37, None))),
        _row("simsiam", "continued", "SimSiam continued", 110, "simsiam100-bs256",
             ((43.78, 0.05), (60.23, 0.08), (68.45, 0.08))),
        _row("simsiam", "e2mc", "SimSiam + E2MC", 110, "simsiam100-bs256",
             ((43.78, 0.06), (60.23, 0.07), (68.52, 0.05))),
    ),
)  # fmt: skip

# Table 3: SwAV 800 continued for 10 epochs with each criterion (linear probe only).
TABLE3 = PaperTable(
    3,
    "Effect of different continued pre-training criteria",
    (
        _row("swav800", BASE, "SwAV base", 800, "swav800", ((53.70, 0.05), (68.86, 0.03), (75.30, None))),
        _row("swav800", "continued", "SwAV continued", 810, "swav800",
             ((53.69, 0.05), (68.87, 0.04), (75.32, 0.01))),
        _row("swav800", "vcreg", "SwAV + VCReg", 810, "swav800",
             ((54.02, 0.05), (68.88, 0.03), (75.36, 0.02))),
        _row("swav800", "mmcr", "SwAV + MMCR", 810, "swav800",
             ((53.30, 0.02), (68.77, 0.04), (75.27, 0.01))),
        _row("swav800", "uniformity", "SwAV + AUH", 810, "swav800",
             ((53.84, 0.07), (68.90, 0.04), (75.33, 0.01))),
        _row("swav800", "e2mc", "SwAV + E2MC", 810, "swav800",
             ((55.27, 0.07), (68.98, 0.02), (75.41, 0.02))),
    ),
)  # fmt: skip

TABLES: dict[int, PaperTable] = {1: TABLE1, 3: TABLE3}


def get_table(value: str | int) -> PaperTable:
    """The table ``value`` names (``1`` or ``3``); anything else is a :class:`UserError`."""
    text = str(value).strip()
    if text.isdigit() and int(text) in TABLES:
        return TABLES[int(text)]
    raise UserError(
        f"--table {value}: expected 1 (VICReg, SwAV 400 and 800, SimSiam, each continued and with "
        "E2MC) or 3 (SwAV 800 continued with VCReg, MMCR, AUH uniformity and E2MC)"
    )


def select_rows(table: PaperTable, rows: str | None) -> list[PaperRow]:
    """The rows ``--rows`` names (comma-separated row ids such as ``vicreg-e2mc``, groups such as
    ``swav800``, or registry bases such as ``swav400-bs256``), in table order; ``None``: every
    row. The base row of every group selected comes too: each group's base is evaluated with it."""
    if rows is None:
        return list(table.rows)
    names = [n.strip() for n in str(rows).split(",") if n.strip()]
    if not names:
        raise UserError("--rows: give at least one row, e.g. vicreg-e2mc or swav800")
    chosen: set[str] = set()
    for name in names:
        hits = {r.id for r in table.rows if name in (r.id, r.group, r.base)}
        if not hits:
            valid = ", ".join(dict.fromkeys([*(r.group for r in table.rows), *(r.id for r in table.rows)]))
            raise UserError(f"--rows {name}: not a row of Table {table.number}; valid names: {valid}")
        chosen |= hits
    groups = {table.row(i).group for i in chosen}
    return [r for r in table.rows if r.id in chosen or (r.group in groups and not r.trained)]
