"""Biased-subset builders: training sets with planted correlations (Patronus, Weng et al., ICLR 2026,
docs/method.md section 6), chosen from the rows of a binary (0, 1, NaN) metadata table, with a report of the
correlations in source and subset. NaN never matches a rule and is left out of statistics.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import matthews_corrcoef

from .chexpert import CHEXPERT_LABELS

__all__ = [
    "SubsetResult",
    "as_table",
    "balanced_independent_subset",
    "celeba_hair_smiling_subset",
    "chexpert_device_finding_subset",
    "correlated_subset",
    "pair_statistics",
    "rule_subset",
]

#: CelebA attribute names used by :func:`celeba_hair_smiling_subset`.
CELEBA_HAIR_COLUMNS: tuple[str, str, str] = ("Black_Hair", "Blond_Hair", "Brown_Hair")
CELEBA_SMILING_COLUMN = "Smiling"

_CELLS = ("a0_b0", "a0_b1", "a1_b0", "a1_b1")
# size=None in correlated_subset: how many sizes below the largest feasible one to search for an exact fraction
_EXACT_SEARCH = 100
_PAIR_HEADER = (
    "A",
    "B",
    "table",
    "rows",
    "A0 B0",
    "A0 B1",
    "A1 B0",
    "A1 B1",
    "P(B=1 \\| A=1)",
    "P(B=1 \\| A=0)",
    "phi",
)


def as_table(table: Any, columns: Sequence[str] | None = None, select: Sequence[str] | None = None) -> pd.DataFrame:
    """``table`` as a float64 ``DataFrame`` of the ``select`` columns, binary-checked, with a ``RangeIndex``.

    Args:
        table: a ``DataFrame``, or anything ``pd.DataFrame(table, columns=columns)`` takes (a mapping of 1-D
            arrays, an ``(N, A)`` array or CPU tensor with ``columns``).
        columns: column names for an array table.
        select: the columns to keep (all when ``None``); each must hold only 0, 1 or NaN.

    Raises:
        ValueError: a ``select`` column missing (the available ones are listed), not numeric, or not binary.
    """
    frame = (
        table
        if isinstance(table, pd.DataFrame)
        else pd.DataFrame(np.asarray(table) if hasattr(table, "cpu") else table, columns=columns)
    )
    frame.columns = [str(c) for c in frame.columns]
    select = list(frame.columns) if select is None else [str(c) for c in select]
    _require_columns(select, list(frame.columns))
    frame = frame[select].reset_index(drop=True).apply(pd.to_numeric).astype(np.float64)
    for name in select:
        values = frame[name].to_numpy()
        bad = np.flatnonzero(~(np.isnan(values) | (values == 0.0) | (values == 1.0)))
        if bad.size:
            shown = sorted({float(v) for v in values[bad[:1000]]})[:5]
            hint = " (CelebA's raw file uses -1/1: map with (x + 1) / 2)" if -1.0 in shown else ""
            raise ValueError(
                f"column {name!r} must hold only 0, 1 or NaN, but {bad.size} row(s) hold other values, e.g. "
                f"{shown} (first at row {int(bad[0])}){hint}; binarise the column first."
            )
    return frame


def _require_columns(wanted: Sequence[str], available: Sequence[str], argument: str = "rule") -> None:
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise ValueError(
            f"{argument} column(s) {unknown} are not in the table; available columns: {list(available)}. Fix the "
            "name(s) (names are case-sensitive)."
        )


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}.")
    return value


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def pair_statistics(x: Any, y: Any, a: str = "a", b: str = "b", where: str = "data") -> dict[str, Any]:
    """2x2 statistics of binary ``x`` (column A) and ``y`` (column B) over rows where both are not NaN.

    Returns:
        ``{"rows", "counts": {"a0_b0", "a0_b1", "a1_b0", "a1_b1"}, "p_b1_given_a1", "p_b1_given_a0", "agreement",
        "phi", "phi_note"}``. ``phi`` is ``sklearn.metrics.matthews_corrcoef`` (phi for a 2x2 table); it and the
        conditional probabilities are ``None`` (never NaN) when undefined, with ``phi_note`` saying why.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = (x[ok] == 1.0).astype(int), (y[ok] == 1.0).astype(int)
    table = pd.crosstab(x, y).reindex(index=[0, 1], columns=[0, 1], fill_value=0)
    counts = {f"a{i}_b{j}": int(table.loc[i, j]) for i in (0, 1) for j in (0, 1)}
    n, a1, b1 = int(x.size), int(x.sum()), int(y.sum())
    constant = [f"{name} always {int(ones == n)}" for name, ones in ((a, a1), (b, b1)) if ones in (0, n)]
    note = None
    if n == 0:
        note = f"no rows in {where} with both {a!r} and {b!r} known"
    elif constant:
        note = f"constant in {where}: " + ", ".join(constant)
    return {
        "rows": n,
        "counts": counts,
        "p_b1_given_a1": _ratio(counts["a1_b1"], a1),
        "p_b1_given_a0": _ratio(counts["a0_b1"], n - a1),
        "agreement": _ratio(counts["a0_b0"] + counts["a1_b1"], n),
        "phi": None if note else float(matthews_corrcoef(x, y)),
        "phi_note": note,
    }


def _prevalence(values: np.ndarray) -> dict[str, Any]:
    known = values[~np.isnan(values)]
    positives = int(np.sum(known == 1.0))
    return {"rows_known": int(known.size), "positives": positives, "rate": _ratio(positives, int(known.size))}


def _statistics(frame: pd.DataFrame, indices: np.ndarray, names: Sequence[str], pairs: Sequence[tuple[str, str]]):
    """Size, per-column prevalence and per-pair statistics in the source table and in the subset."""
    subset = frame.iloc[indices]
    return {
        "source_size": len(frame),
        "subset_size": len(indices),
        "columns": list(names),
        "prevalence": {
            name: {"source": _prevalence(frame[name].to_numpy()), "subset": _prevalence(subset[name].to_numpy())}
            for name in names
        },
        "pairs": [
            {
                "a": a,
                "b": b,
                "source": pair_statistics(frame[a], frame[b], a, b, "source"),
                "subset": pair_statistics(subset[a], subset[b], a, b, "subset"),
            }
            for a, b in pairs
        ],
    }


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], text: int = 1) -> list[str]:
    """A Markdown table, the first ``text`` columns left-aligned (``DataFrame.to_markdown`` needs ``tabulate``)."""
    align = "|".join(["---"] * text + ["---:"] * (len(header) - text))
    return [f"| {' | '.join(header)} |", f"|{align}|", *(f"| {' | '.join(map(str, r))} |" for r in rows), ""]


def _rule_text(rule: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in rule.items())


@dataclass(frozen=True, eq=False)
class SubsetResult:
    """Rows chosen by a subset builder, and what the choice did to the correlations.

    Attributes:
        indices: sorted, read-only int64 row positions in the source table.
        report: JSON-serialisable dict: ``builder``, ``params``, ``source_size``, ``subset_size``, ``columns``,
            ``prevalence`` (``{column: {"source"|"subset": {"rows_known", "positives", "rate"}}}``), ``pairs``
            (``[{"a", "b", "source": stats, "subset": stats}]``, stats from :func:`pair_statistics`), ``notes``,
            plus the builder's own keys (``rules``/``exclude``, ``cells``, ``shortcut`` ...).
    """

    indices: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        indices = np.sort(np.array(self.indices, dtype=np.int64).reshape(-1))
        indices.setflags(write=False)
        object.__setattr__(self, "indices", indices)

    def __len__(self) -> int:
        return int(self.indices.size)

    def select(self, items: Sequence[Any]) -> list[Any]:
        """The chosen items of ``items`` (a sequence aligned with the source table), in row order."""
        expected = self.report.get("source_size")
        if expected is not None and len(items) != expected:
            raise ValueError(
                f"SubsetResult.select: items has {len(items)} entries but the source table had {expected} rows; "
                "pass the sequence the subset was built from (same order)."
            )
        return [items[int(i)] for i in self.indices]

    def to_markdown(self) -> str:
        """The report as Markdown: sizes, rules or cells, per-pair statistics in source and subset, notes."""
        r = self.report
        sizes = f"Source rows: {r.get('source_size')} · subset rows: {r.get('subset_size')}"
        if "rows_dropped_nan" in r:
            sizes += f" · source rows with NaN in a or b (not candidates): {r['rows_dropped_nan']}"
        if "agreement_achieved" in r:
            sizes += f" · agreement requested {_fmt(r['agreement_requested'])}, "
            sizes += f"achieved {_fmt(r['agreement_achieved'])}"
        lines = [f"### Subset `{r.get('builder', '?')}`", "", sizes, ""]
        if r.get("rules"):
            lines += _markdown_table(
                ["keep rule", "matched", "removed by exclude", "selected", "in subset"],
                [
                    [_rule_text(k["keep"]), k["matched"], k["excluded"], k["selected"], k["in_subset"]]
                    for k in r["rules"]
                ],
            )
        if r.get("exclude"):
            lines += _markdown_table(
                ["exclude rule", "matched in source"], [[_rule_text(e["rule"]), e["matched"]] for e in r["exclude"]]
            )
        if r.get("cells"):
            lines += _markdown_table(
                ["cell", "available", "selected"],
                [[c, r["cells"]["available"][c], r["cells"]["selected"][c]] for c in _CELLS],
            )
        if r.get("pairs"):
            rows = [
                [
                    p["a"],
                    p["b"],
                    w,
                    s["rows"],
                    *s["counts"].values(),
                    _fmt(s["p_b1_given_a1"]),
                    _fmt(s["p_b1_given_a0"]),
                    _fmt(s["phi"]) if s["phi"] is not None else f"— ({s['phi_note']})",
                ]
                for p in r["pairs"]
                for w, s in (("source", p["source"]), ("subset", p["subset"]))
            ]
            lines += _markdown_table(_PAIR_HEADER, rows, text=3)
        if r.get("shortcut"):
            s = r["shortcut"]
            lines += [
                f"Planted shortcut: {s['a']} -> {s['b']}, phi {_fmt(s['phi_source'])} in source, "
                f"{_fmt(s['phi_subset'])} in subset.",
                "",
            ]
        lines += [f"- {note}" for note in r.get("notes", [])]
        return "\n".join(lines).rstrip() + "\n"


def _check_rules(rules: Any, argument: str, allow_empty: bool) -> list[dict[str, int]]:
    """A rule or sequence of rules -> list of ``{str column: 0|1}``."""
    rules = [rules] if isinstance(rules, Mapping) else rules
    if isinstance(rules, str) or not all(isinstance(rule, Mapping) for rule in rules):
        raise TypeError(f"{argument} must be a list of rules, each a mapping {{column: 0 or 1}}, got {rules!r}.")
    if not rules and not allow_empty:
        raise ValueError(f"{argument} is empty; give at least one rule {{column: 0 or 1}}.")
    for k, rule in enumerate(rules):
        if not rule:
            raise ValueError(f"{argument}[{k}] is an empty rule, which would match every row; name a column.")
        for column, value in rule.items():
            if value not in (0, 1):
                raise ValueError(f"{argument}[{k}] requires {column}={value!r}; rule values must be 0 or 1.")
    return [{str(c): int(v) for c, v in rule.items()} for rule in rules]


def _rule_mask(frame: pd.DataFrame, rule: Mapping[str, int]) -> np.ndarray:
    return (frame[list(rule)] == pd.Series(rule, dtype=np.float64)).all(axis=1).to_numpy()  # NaN never equals


def _rule_subset(frame, keep, exclude, max_rows_per_rule, rng) -> tuple[np.ndarray, dict[str, Any]]:
    exclude_masks = [_rule_mask(frame, rule) for rule in exclude]
    excluded = np.logical_or.reduce([np.zeros(len(frame), bool), *exclude_masks])
    chosen = np.zeros(len(frame), dtype=bool)
    rules_report, masks = [], []
    for k, rule in enumerate(keep):
        mask = _rule_mask(frame, rule)
        rows = np.flatnonzero(mask & ~excluded)
        if rows.size == 0:
            per_condition = {f"{c}={v}": int((frame[c] == v).sum()) for c, v in rule.items()}
            why = (
                f"matched {int(mask.sum())} of {len(frame)} row(s), all removed by the exclude rules"
                if mask.any()
                else f"matched no rows of {len(frame)} (rows per condition: {per_condition})"
            )
            raise ValueError(
                f"keep rule {k} {rule} {why}; fix the rule (column names and 0/1 values) or drop it — a rule that "
                "selects nothing cannot plant its correlation."
            )
        if max_rows_per_rule is not None and rows.size > max_rows_per_rule:
            rows = np.sort(rng.choice(rows, size=max_rows_per_rule, replace=False))
        chosen[rows] = True
        masks.append(mask)
        rules_report.append(
            {
                "keep": dict(rule),
                "matched": int(mask.sum()),
                "excluded": int((mask & excluded).sum()),
                "selected": int(rows.size),
            }
        )
    for entry, mask in zip(rules_report, masks):
        entry["in_subset"] = int((mask & chosen).sum())
    exclude_report = [{"rule": dict(rule), "matched": int(m.sum())} for rule, m in zip(exclude, exclude_masks)]
    return np.flatnonzero(chosen).astype(np.int64), {"rules": rules_report, "exclude": exclude_report}


def rule_subset(
    table: Any,
    keep: Sequence[Mapping[str, int]] | Mapping[str, int],
    exclude: Sequence[Mapping[str, int]] = (),
    max_rows_per_rule: int | None = None,
    seed: int | None = 0,
    columns: Sequence[str] | None = None,
) -> SubsetResult:
    """Keep the rows that match all entries of any ``keep`` rule and no ``exclude`` rule.

    Args:
        table: metadata table (see :func:`as_table`).
        keep: rules ``{column: 0 or 1}`` (a single mapping is one rule); a row is kept when it equals every
            entry of at least one rule. NaN never matches.
        exclude: rules of the same form; a row matching any of them is dropped (before subsampling).
        max_rows_per_rule: at most this many rows per keep rule, drawn without replacement (seeded) from the
            rule's matches that survive ``exclude``. Each rule draws independently; a row chosen by several
            rules counts once (the report's ``in_subset`` gives each rule's final count). ``None``: all.
        seed: seed of the ``numpy.random.Generator`` used for subsampling.
        columns: column names when ``table`` is an array.

    Returns:
        A :class:`SubsetResult`; the report adds ``rules`` (per keep rule: ``keep``, ``matched``, ``excluded``,
        ``selected``, ``in_subset``) and ``exclude`` (per exclude rule: ``rule``, ``matched``). ``pairs`` covers
        every pair of columns named in the rules, in order of first mention.
    """
    keep = _check_rules(keep, "keep", allow_empty=False)
    exclude = _check_rules(exclude, "exclude", allow_empty=True)
    _positive("max_rows_per_rule", max_rows_per_rule)
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(c for rule in [*keep, *exclude] for c in rule))
    frame = as_table(table, columns, select=names)
    indices, extra = _rule_subset(frame, keep, exclude, max_rows_per_rule, rng)
    params = {"keep": keep, "exclude": exclude, "max_rows_per_rule": max_rows_per_rule, "seed": seed}
    stats = _statistics(frame, indices, names, list(itertools.combinations(names, 2)))
    return SubsetResult(indices, {"builder": "rule_subset", "params": params, **stats, **extra, "notes": []})


def _max_two_cells(c_first: int, c_second: int) -> int:
    """Most rows taken from two cells that must get equal counts, or one more in either."""
    lo, hi = min(c_first, c_second), max(c_first, c_second)
    return 2 * lo + (1 if hi > lo else 0)


def _split_two_cells(n: int, c_first: int, c_second: int) -> tuple[int, int]:
    """Split ``n`` rows evenly between two cells; an odd one goes to the fuller cell (ties: the first)."""
    half, odd = divmod(n, 2)
    if not odd:
        return half, half
    return (half + 1, half) if c_first >= c_second else (half, half + 1)


def _n_agree(agreement: float, size: int) -> int:
    return math.floor(agreement * size + 0.5)


def _cell_subset(
    frame, a: str, b: str, agreement: float, size: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    x, y = frame[a].to_numpy(), frame[b].to_numpy()
    known = ~(np.isnan(x) | np.isnan(y))
    rows = {f"a{i}_b{j}": np.flatnonzero(known & (x == i) & (y == j)) for i in (0, 1) for j in (0, 1)}
    avail = {cell: int(r.size) for cell, r in rows.items()}
    max_agree = _max_two_cells(avail["a1_b1"], avail["a0_b0"])
    max_disagree = _max_two_cells(avail["a1_b0"], avail["a0_b1"])

    def fits(s: int) -> bool:
        # rounding never drops a requested kind of row entirely (agreement 0.1 must keep >= 1 agreeing row)
        n_agree = _n_agree(agreement, s)
        n_disagree = s - n_agree
        return (
            n_agree <= max_agree
            and n_disagree <= max_disagree
            and (agreement == 0.0 or n_agree >= 1)
            and (agreement == 1.0 or n_disagree >= 1)
        )

    if agreement == 1.0:
        largest = max_agree
    elif agreement == 0.0:
        largest = max_disagree
    else:
        bound = min((max_agree + 0.5) / agreement, (max_disagree + 0.5) / (1.0 - agreement))
        largest = min(max_agree + max_disagree, int(bound) + 1)
        while largest > 0 and not fits(largest):
            largest -= 1
    counts_text = f"available rows (a={a!r}, b={b!r}, NaN dropped): " + ", ".join(f"{c}={avail[c]}" for c in _CELLS)
    if size is None:
        if largest == 0:
            raise ValueError(
                f"no subset reaches agreement={agreement}: with balanced cells at most {max_agree} "
                f"agreeing (a1_b1, a0_b0) and {max_disagree} disagreeing (a1_b0, a0_b1) rows can be used; "
                f"{counts_text}. Use a larger table or another agreement."
            )
        # prefer an exact fraction: the largest of the 100 largest feasible sizes with agreement * size whole
        exact = [
            s
            for s in range(largest, max(largest - _EXACT_SEARCH, 0), -1)
            if fits(s) and abs(agreement * s - round(agreement * s)) < 1e-9
        ]
        size = exact[0] if exact else largest
    elif not fits(size):
        n_agree = _n_agree(agreement, size)
        g11, g00 = _split_two_cells(n_agree, avail["a1_b1"], avail["a0_b0"])
        g10, g01 = _split_two_cells(size - n_agree, avail["a1_b0"], avail["a0_b1"])
        raise ValueError(
            f"size={size} with agreement={agreement} needs {n_agree} agreeing rows (a1_b1={g11}, "
            f"a0_b0={g00}) and {size - n_agree} disagreeing rows (a1_b0={g10}, a0_b1={g01}), but {counts_text}; "
            f"the largest size at this agreement is {largest}. Lower size (or pass size=None) or change agreement."
        )
    n_agree = _n_agree(agreement, size)
    take = {}
    take["a1_b1"], take["a0_b0"] = _split_two_cells(n_agree, avail["a1_b1"], avail["a0_b0"])
    take["a1_b0"], take["a0_b1"] = _split_two_cells(size - n_agree, avail["a1_b0"], avail["a0_b1"])
    picked = [rng.choice(rows[cell], size=take[cell], replace=False) for cell in _CELLS if take[cell] > 0]
    indices = np.sort(np.concatenate(picked)).astype(np.int64)
    extra = {
        "rows_dropped_nan": int((~known).sum()),
        "agreement_requested": float(agreement),
        "agreement_achieved": n_agree / size,
        "cells": {"available": avail, "selected": {cell: int(take[cell]) for cell in _CELLS}},
    }
    return indices, extra


def _check_pair(a: str, b: str, names: tuple[str, str] = ("a", "b")) -> None:
    if a == b:
        raise ValueError(f"{names[0]} and {names[1]} are both {a!r}; give two different columns.")


def _check_agreement(agreement: float) -> float:
    if not 0.0 <= agreement <= 1.0:
        raise ValueError(
            f"agreement must be in [0, 1] (1 = a always equals b, 0.5 = independent, 0 = always opposite), "
            f"got {agreement!r}."
        )
    return float(agreement)


_CELL_NOTE = (
    "cells are balanced: a1_b1 and a0_b0 share the agreeing rows equally, a1_b0 and a0_b1 the disagreeing "
    "ones (an odd row goes to the fuller cell), so both marginals are ~0.5 and phi ~ 2 * agreement - 1"
)


def _pair_report(builder, params, frame, indices, a, b, extra, notes) -> SubsetResult:
    report = {"builder": builder, "params": params, **_statistics(frame, indices, [a, b], [(a, b)]), **extra}
    return SubsetResult(indices, {**report, "notes": notes})


def correlated_subset(
    table: Any,
    a: str,
    b: str,
    agreement: float = 1.0,
    size: int | None = None,
    seed: int | None = 0,
    columns: Sequence[str] | None = None,
) -> SubsetResult:
    """Rows where binary columns ``a`` and ``b`` agree (``a == b``) in a fraction ``agreement`` of the subset.

    Agreeing rows are split equally between cells ``a=b=1`` and ``a=b=0``, disagreeing ones between the other two,
    so ``phi ≈ 2 * agreement - 1``. Rows with NaN in ``a`` or ``b`` are not candidates.

    Args:
        table: metadata table (see :func:`as_table`).
        a: first binary column.
        b: second binary column.
        agreement: fraction of subset rows with ``a == b``, in [0, 1]; ``round(agreement * size)`` rows agree.
        size: number of rows; ``None``: the largest subset reaching ``agreement``, preferring among the 100
            largest feasible sizes the largest with ``agreement * size`` whole (an exact fraction).
        seed: seed of the ``numpy.random.Generator`` drawing rows within each cell.
        columns: column names when ``table`` is an array.

    Returns:
        A :class:`SubsetResult`; the report adds ``rows_dropped_nan``, ``agreement_requested``,
        ``agreement_achieved`` and ``cells`` (``{"available"|"selected": {"a0_b0", "a0_b1", "a1_b0", "a1_b1"}}``).
    """
    _check_pair(a, b)
    agreement = _check_agreement(agreement)
    frame = as_table(table, columns, select=[a, b])
    indices, extra = _cell_subset(frame, a, b, agreement, _positive("size", size), np.random.default_rng(seed))
    params = {"a": a, "b": b, "agreement": agreement, "size": size, "seed": seed}
    return _pair_report("correlated_subset", params, frame, indices, a, b, extra, [_CELL_NOTE])


def balanced_independent_subset(
    table: Any, a: str, b: str, per_cell: int | None = None, seed: int | None = 0, columns: Sequence[str] | None = None
) -> SubsetResult:
    """Equal counts in all four ``(a, b)`` cells: ``a`` and ``b`` independent with balanced marginals.

    The held-out set for a shortcut check: :func:`correlated_subset`'s draw at ``agreement=0.5``.

    Args:
        table: metadata table (see :func:`as_table`).
        a: first binary column.
        b: second binary column.
        per_cell: rows per cell; ``None``: as many as the smallest cell holds.
        seed: seed of the ``numpy.random.Generator`` drawing rows within each cell.
        columns: column names when ``table`` is an array.

    Returns:
        A :class:`SubsetResult` of ``4 * per_cell`` rows (phi exactly 0); report as for
        :func:`correlated_subset` plus ``per_cell``.
    """
    _check_pair(a, b)
    _positive("per_cell", per_cell)
    frame = as_table(table, columns, select=[a, b])
    avail = pd.crosstab(frame[a], frame[b]).reindex(index=[0, 1], columns=[0, 1], fill_value=0)
    avail = {f"a{i}_b{j}": int(avail.loc[i, j]) for i in (0, 1) for j in (0, 1)}
    smallest = min(avail.values())
    counts_text = f"cells (a={a!r}, b={b!r}, NaN dropped): " + ", ".join(f"{c}={avail[c]}" for c in _CELLS)
    if smallest == 0:
        raise ValueError(
            f"cell(s) {[c for c in _CELLS if avail[c] == 0]} have no rows, so a and b cannot be made independent "
            f"with balanced marginals; {counts_text}. Use a larger table or other columns."
        )
    if per_cell is not None and per_cell > smallest:
        raise ValueError(
            f"per_cell={per_cell} but the smallest cell has {smallest} rows; {counts_text}. Pass "
            f"per_cell <= {smallest} (or None)."
        )
    per_cell = per_cell or smallest
    indices, extra = _cell_subset(frame, a, b, 0.5, 4 * per_cell, np.random.default_rng(seed))
    notes = [f"{per_cell} rows in each of the four cells: a and b independent, both marginals 0.5"]
    params = {"a": a, "b": b, "per_cell": per_cell, "seed": seed}
    return _pair_report(
        "balanced_independent_subset", params, frame, indices, a, b, {**extra, "per_cell": per_cell}, notes
    )


def celeba_hair_smiling_subset(
    attributes: Any, names: Sequence[str] | None = None, seed: int | None = 0, max_rows_per_rule: int | None = None
) -> SubsetResult:
    """The paper's CelebA shortcut subset: hair colour predicts smiling (Patronus, docs/method.md section 6).

    Keeps blond- or brown-haired people who smile and black-haired people who do not (phi = -1); only rows with
    exactly one hair colour set are candidates. The paper reports 61,214 of the 202,599 CelebA images.

    Args:
        attributes: a :class:`~monai_patronus.data.natural.CelebAReader` (``.attributes`` and
            ``.attribute_names``), or a table (see :func:`as_table`) with 0/1 values.
        names: column names when ``attributes`` is an ``(N, 40)`` array or tensor.
        seed: seed for subsampling (only used with ``max_rows_per_rule``).
        max_rows_per_rule: optional cap on each of the three groups (see :func:`rule_subset`).

    Returns:
        A :class:`SubsetResult` (report as for :func:`rule_subset`) plus ``shortcut``: ``{"a": "Black_Hair",
        "b": "Smiling", "phi_source", "phi_subset"}``. Select images with ``result.select(reader.filenames)``.
    """
    black, blond, brown = CELEBA_HAIR_COLUMNS
    smiling = CELEBA_SMILING_COLUMN
    keep = [
        {black: 0, blond: 1, brown: 0, smiling: 1},
        {black: 0, blond: 0, brown: 1, smiling: 1},
        {black: 1, blond: 0, brown: 0, smiling: 0},
    ]
    _positive("max_rows_per_rule", max_rows_per_rule)
    if hasattr(attributes, "attribute_names"):
        attributes, names = attributes.attributes, attributes.attribute_names
    cols = [*CELEBA_HAIR_COLUMNS, smiling]
    frame = as_table(attributes, names, select=cols)
    indices, extra = _rule_subset(frame, keep, [], max_rows_per_rule, np.random.default_rng(seed))
    stats = _statistics(frame, indices, cols, list(itertools.combinations(cols, 2)))
    pair = next(p for p in stats["pairs"] if (p["a"], p["b"]) == (black, smiling))
    shortcut = {"a": black, "b": smiling, "phi_source": pair["source"]["phi"], "phi_subset": pair["subset"]["phi"]}
    hair = ", ".join(CELEBA_HAIR_COLUMNS)
    note = f"blond/brown hair -> smiling, black hair -> not smiling; only rows with exactly one of {hair} set"
    params = {"max_rows_per_rule": max_rows_per_rule, "seed": seed}
    report = {"builder": "celeba_hair_smiling_subset", "params": params, **stats, **extra, "shortcut": shortcut}
    return SubsetResult(indices, {**report, "notes": [note]})


def chexpert_device_finding_subset(
    datalist: Sequence[Mapping[str, Any]],
    device: str = "Support Devices",
    finding: str = "Cardiomegaly",
    agreement: float = 1.0,
    label_columns: Sequence[str] = CHEXPERT_LABELS,
    seed: int | None = 0,
    size: int | None = None,
) -> SubsetResult:
    """A CheXpert datalist where a device label agrees with a finding label in a chosen fraction of rows.

    The paper's medical shortcut (a pacemaker standing in for cardiomegaly), drawn as :func:`correlated_subset`.

    Args:
        datalist: items from :func:`~monai_patronus.data.chexpert.load_chexpert_datalist` (mappings with a
            ``"label"`` array aligned with ``label_columns``).
        device: the device label column.
        finding: the finding label column.
        agreement: fraction of chosen items where device == finding, in [0, 1].
        label_columns: names of the ``"label"`` entries, in order.
        seed: seed for the draw within each cell.
        size: number of items; ``None``: the largest achievable.

    Returns:
        A :class:`SubsetResult` with ``a`` = ``device`` and ``b`` = ``finding`` (report as for
        :func:`correlated_subset`); ``result.select(datalist)`` gives the chosen items.
    """
    _check_pair(device, finding, names=("device", "finding"))
    label_columns = [str(c) for c in label_columns]
    _require_columns([device, finding], label_columns, argument="device/finding")
    agreement = _check_agreement(agreement)
    values = np.empty((len(datalist), 2), dtype=np.float64)
    for i, item in enumerate(datalist):
        if "label" not in item:
            raise ValueError(f"datalist[{i}] has no 'label' entry; pass the items from load_chexpert_datalist.")
        label = np.asarray(item["label"], dtype=np.float64).reshape(-1)
        if label.size != len(label_columns):
            raise ValueError(
                f"datalist[{i}]['label'] has {label.size} values but label_columns has {len(label_columns)}; pass "
                "the label_columns the datalist was loaded with."
            )
        values[i] = label[label_columns.index(device)], label[label_columns.index(finding)]
    frame = as_table(values, [device, finding])
    rng = np.random.default_rng(seed)
    indices, extra = _cell_subset(frame, device, finding, agreement, _positive("size", size), rng)
    params = {"device": device, "finding": finding, "agreement": agreement, "size": size, "seed": seed}
    notes = [_CELL_NOTE, "items with a NaN device or finding label (uncertain, ignored) are not candidates"]
    return _pair_report("chexpert_device_finding_subset", params, frame, indices, device, finding, extra, notes)
