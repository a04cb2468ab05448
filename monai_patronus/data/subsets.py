"""Biased-subset builders: training sets with planted correlations, made from attribute metadata.

A shortcut check needs a training set in which two attributes that should be independent are correlated
(Patronus, Weng et al., ICLR 2026, METHOD.md section 6: a CelebA subset where blond- and brown-haired people
always smile and black-haired people never do; chest X-rays where a support device co-occurs with
cardiomegaly), and a held-out set in which they are independent. The builders here select rows of a metadata
table and return a :class:`SubsetResult`: the chosen row positions plus a JSON-serialisable report stating
the correlations the selection created (phi coefficient, 2x2 counts, conditional probabilities, in the
source and in the subset), so the shortcut report that the trained model produces can be checked against
what was planted.

Tables: every builder accepts one table type, converted once by :func:`as_table`: a pandas ``DataFrame``, a
mapping ``column name -> 1-D array``, a ``(N, A)`` array or tensor with ``columns`` names, or an object with
``.attributes`` and ``.attribute_names`` (like :class:`~monai_patronus.data.natural.CelebAReader`). Columns a
rule or pair uses must hold 0, 1 or NaN; NaN never matches a rule and is left out of pair statistics.

Builders:

- :func:`rule_subset`: keep rows matching any of several ``{column: value}`` rules (optionally subsampled).
- :func:`correlated_subset`: two binary columns agree in a chosen fraction of the rows.
- :func:`balanced_independent_subset`: equal counts in all four cells (independent, balanced marginals).
- :func:`celeba_hair_smiling_subset`: the paper's CelebA hair-colour -> smiling subset.
- :func:`chexpert_device_finding_subset`: a CheXpert datalist where a device label tracks a finding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from monai.utils import optional_import

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


def _pandas():
    pd, has_pandas = optional_import("pandas")
    if not has_pandas:
        raise ImportError(
            "monai_patronus.data.subsets needs pandas: pip install 'monai-patronus[medical]' (or pandas)."
        )
    return pd


# ---------------------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------------------


def _to_numpy(values: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like -> numpy array."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def as_table(
    table: Any,
    columns: Sequence[str] | None = None,
    *,
    select: Sequence[str] | None = None,
    caller: str = "as_table",
):
    """Convert any supported metadata table to a pandas ``DataFrame`` of float64 values.

    Row ``i`` of the result is row ``i`` of the input (the index is reset to ``0..N-1``; builders return
    these positions). Column names become ``str``.

    Args:
        table: one of

            - a pandas ``DataFrame`` (its column names are used; ``columns`` must be ``None``);
            - a mapping ``{column name: 1-D array / list / tensor}``, all of the same length;
            - a ``(N, A)`` numpy array, tensor or nested list, with ``columns`` giving the ``A`` names;
            - an object with ``.attributes`` (``(N, A)``) and ``.attribute_names`` (``A`` names), such as
              :class:`~monai_patronus.data.natural.CelebAReader`.
        columns: column names for an array table (required there, refused for the other kinds).
        select: keep only these columns (in this order) before converting; unknown names raise. Builders
            pass the columns their rules use, so other columns (file names, free text) may be anything.
        caller: function name used to prefix error messages.

    Returns:
        A ``DataFrame`` of float64 columns with a ``RangeIndex``.

    Raises:
        ValueError: wrong shape, mismatched lengths or names, duplicate names, unknown ``select`` names
            (the message lists the available columns), an empty table, or a column that is not numeric.
        TypeError: a table of an unsupported type.
    """
    pd = _pandas()
    if isinstance(table, pd.DataFrame):
        if columns is not None:
            raise ValueError(
                f"{caller}: columns={list(columns)!r} was given with a DataFrame, which carries its own column "
                "names; pass columns=None (or rename the DataFrame's columns)."
            )
        names = [str(c) for c in table.columns]
        data = {name: table.iloc[:, j] for j, name in enumerate(names)}
        n_rows = len(table)
    elif isinstance(table, Mapping):
        if columns is not None:
            raise ValueError(
                f"{caller}: columns={list(columns)!r} was given with a mapping, whose keys are the column "
                "names; pass columns=None."
            )
        names = [str(c) for c in table]
        data, lengths = {}, {}
        for name, values in zip(names, table.values()):
            array = _to_numpy(values)
            if array.ndim != 1:
                raise ValueError(
                    f"{caller}: table column {name!r} has shape {tuple(array.shape)}; every value of a mapping "
                    "table must be 1-D (one entry per row)."
                )
            data[name], lengths[name] = array, len(array)
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"{caller}: the table's columns have different lengths {lengths}; give one value per row in "
                "every column."
            )
        n_rows = next(iter(lengths.values()), 0)
    else:
        if hasattr(table, "attributes") and hasattr(table, "attribute_names"):
            if columns is not None:
                raise ValueError(
                    f"{caller}: columns={list(columns)!r} was given with {type(table).__name__}, which carries "
                    "its own .attribute_names; pass columns=None."
                )
            columns, table = list(table.attribute_names), table.attributes
        try:
            array = _to_numpy(table)
        except Exception as e:  # any failure means the type is not array-like
            raise TypeError(
                f"{caller}: table of type {type(table).__name__} is not supported; pass a pandas DataFrame, a "
                "mapping column -> 1-D array, or an (N, A) array/tensor with columns=[names]."
            ) from e
        if array.ndim != 2 or array.dtype == object:
            raise TypeError(
                f"{caller}: table of type {type(table).__name__} (array shape {tuple(array.shape)}, dtype "
                f"{array.dtype}) is not supported; pass a pandas DataFrame, a mapping column -> 1-D array, or an "
                "(N, A) numeric array/tensor with columns=[names]."
            )
        if columns is None:
            raise ValueError(
                f"{caller}: table is an array of shape {tuple(array.shape)} without column names; pass "
                f"columns=[{array.shape[1]} names] (for CelebA: reader.attribute_names)."
            )
        names = [str(c) for c in columns]
        if len(names) != array.shape[1]:
            raise ValueError(
                f"{caller}: columns has {len(names)} names but the table has {array.shape[1]} columns "
                f"(shape {tuple(array.shape)}); give one name per column."
            )
        data = {name: array[:, j] for j, name in enumerate(names)}
        n_rows = array.shape[0]

    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{caller}: the table has duplicate column names {duplicates}; make them unique.")
    if n_rows == 0:
        raise ValueError(f"{caller}: the table has no rows; nothing to select from.")
    if select is not None:
        select = [str(c) for c in select]
        _require_columns(select, names, caller)
        names = list(dict.fromkeys(select))
    converted = {}
    for name in names:
        values = data[name]
        series = values.reset_index(drop=True) if isinstance(values, pd.Series) else pd.Series(values)
        if series.dtype == bool:
            converted[name] = series.to_numpy(dtype=np.float64)
            continue
        try:
            numeric = pd.to_numeric(series, errors="raise")
            converted[name] = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{caller}: table column {name!r} is not numeric ({e}); pass only numeric 0/1 attribute "
                "columns for the rules, or convert this column first."
            ) from e
    return pd.DataFrame(converted, index=pd.RangeIndex(n_rows))


def _require_columns(wanted: Sequence[str], available: Sequence[str], caller: str, argument: str = "rule") -> None:
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise ValueError(
            f"{caller}: {argument} column(s) {unknown} are not in the table; available columns: "
            f"{list(available)}. Fix the name(s) (names are case-sensitive)."
        )


def _check_binary(frame, names: Sequence[str], caller: str) -> None:
    """Every value of ``names`` must be 0, 1 or NaN."""
    for name in names:
        values = frame[name].to_numpy()
        bad = ~(np.isnan(values) | (values == 0.0) | (values == 1.0))
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = sorted({float(v) for v in values[rows[:1000]]})[:5]
            hint = " (CelebA's raw file uses -1/1: map with (x + 1) / 2)" if -1.0 in shown else ""
            raise ValueError(
                f"{caller}: column {name!r} must hold only 0, 1 or NaN, but {rows.size} row(s) hold other "
                f"values, e.g. {shown} (first at row {int(rows[0])}){hint}; binarise the column first."
            )


# ---------------------------------------------------------------------------------------------------------
# statistics and the result
# ---------------------------------------------------------------------------------------------------------


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def pair_statistics(x: object, y: object, a: str = "a", b: str = "b", where: str = "data") -> dict[str, Any]:
    """2x2 statistics of binary ``x`` (column A) and ``y`` (column B) over rows where both are not NaN.

    Returns:
        ``{"rows", "counts": {"a0_b0", "a0_b1", "a1_b0", "a1_b1"}, "p_b1_given_a1", "p_b1_given_a0", "agreement",
        "phi", "phi_note"}``. ``phi`` is the Pearson correlation of the two 0/1 columns; it and the conditional
        probabilities are ``None`` (never NaN) when undefined, with ``phi_note`` saying why (``a``, ``b`` and
        ``where`` name the columns and the data in that note).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok] == 1.0, y[ok] == 1.0
    n11, n10 = int(np.sum(x & y)), int(np.sum(x & ~y))
    n01, n00 = int(np.sum(~x & y)), int(np.sum(~x & ~y))
    n = n00 + n01 + n10 + n11
    a1, b1 = n10 + n11, n01 + n11
    phi: float | None = None
    note: str | None = None
    if n == 0:
        note = f"no rows in {where} with both {a!r} and {b!r} known"
    else:
        constant = [f"{name} always {int(ones == n)}" for name, ones in ((a, a1), (b, b1)) if ones in (0, n)]
        if constant:
            note = f"constant in {where}: " + ", ".join(constant)
        else:
            phi = (n11 * n00 - n10 * n01) / math.sqrt(a1 * (n - a1) * b1 * (n - b1))
            phi = max(-1.0, min(1.0, phi))
    return {
        "rows": n,
        "counts": {"a0_b0": n00, "a0_b1": n01, "a1_b0": n10, "a1_b1": n11},
        "p_b1_given_a1": _ratio(n11, a1),
        "p_b1_given_a0": _ratio(n01, n - a1),
        "agreement": _ratio(n00 + n11, n),
        "phi": phi,
        "phi_note": note,
    }


def _prevalence(values: np.ndarray) -> dict[str, Any]:
    known = values[~np.isnan(values)]
    positives = int(np.sum(known == 1.0))
    return {"rows_known": int(known.size), "positives": positives, "rate": _ratio(positives, int(known.size))}


def _statistics(frame, indices: np.ndarray, names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
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
                "source": pair_statistics(frame[a].to_numpy(), frame[b].to_numpy(), a, b, "source"),
                "subset": pair_statistics(subset[a].to_numpy(), subset[b].to_numpy(), a, b, "subset"),
            }
            for a, b in pairs
        ],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rule_text(rule: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in rule.items())


@dataclass(frozen=True, eq=False)
class SubsetResult:
    """Rows chosen by a subset builder, and what the choice did to the correlations.

    Attributes:
        indices: sorted int64 row positions in the source table (read-only array; sorted on construction).
        report: JSON-serialisable dict. Keys always present: ``builder`` (function name), ``params`` (its
            arguments), ``source_size``, ``subset_size``, ``columns`` (the columns involved), ``prevalence``
            (``{column: {"source"|"subset": {"rows_known", "positives", "rate"}}}``), ``pairs`` (a list of
            ``{"a", "b", "source": stats, "subset": stats}``, stats being ``{"rows", "counts": {"a0_b0",
            "a0_b1", "a1_b0", "a1_b1"}, "p_b1_given_a1", "p_b1_given_a0", "agreement", "phi", "phi_note"}``)
            and ``notes`` (list of str). ``phi`` is ``None`` (never NaN) when a column is constant, with
            ``phi_note`` saying so (e.g. ``"constant in subset: Smiling always 1"``). Builders add their own
            keys (``rules``/``exclude``, ``cells``, ``shortcut`` ...); see each builder.
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
        """The chosen items of ``items`` (the source datalist, file list, dataset ...), in row order.

        Args:
            items: any sequence (``len`` and integer indexing) aligned with the source table.

        Raises:
            ValueError: ``items`` does not have the source table's length.
        """
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
        lines = [f"### Subset `{r.get('builder', '?')}`", ""]
        sizes = f"Source rows: {r.get('source_size')} · subset rows: {r.get('subset_size')}"
        if "rows_dropped_nan" in r:
            sizes += f" · source rows with NaN in a or b (not candidates): {r['rows_dropped_nan']}"
        if "agreement_achieved" in r:
            sizes += (
                f" · agreement requested {_fmt(r['agreement_requested'])}, "
                f"achieved {_fmt(r['agreement_achieved'])}"
            )
        lines += [sizes, ""]
        if r.get("rules"):
            lines += [
                "| keep rule | matched | removed by exclude | selected | in subset |",
                "|---|---:|---:|---:|---:|",
            ]
            for rule in r["rules"]:
                lines.append(
                    f"| {_rule_text(rule['keep'])} | {rule['matched']} | {rule['excluded']} | {rule['selected']} "
                    f"| {rule['in_subset']} |"
                )
            lines.append("")
        if r.get("exclude"):
            lines += ["| exclude rule | matched in source |", "|---|---:|"]
            for rule in r["exclude"]:
                lines.append(f"| {_rule_text(rule['rule'])} | {rule['matched']} |")
            lines.append("")
        if r.get("cells"):
            lines += ["| cell | available | selected |", "|---|---:|---:|"]
            for cell in _CELLS:
                lines.append(f"| {cell} | {r['cells']['available'][cell]} | {r['cells']['selected'][cell]} |")
            lines.append("")
        if r.get("pairs"):
            lines += [
                "| A | B | table | rows | A0 B0 | A0 B1 | A1 B0 | A1 B1 | P(B=1 \\| A=1) | P(B=1 \\| A=0) | phi |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for pair in r["pairs"]:
                for where in ("source", "subset"):
                    s = pair[where]
                    c = s["counts"]
                    phi = _fmt(s["phi"]) if s["phi"] is not None else f"— ({s['phi_note']})"
                    lines.append(
                        f"| {pair['a']} | {pair['b']} | {where} | {s['rows']} | {c['a0_b0']} | {c['a0_b1']} | "
                        f"{c['a1_b0']} | {c['a1_b1']} | {_fmt(s['p_b1_given_a1'])} | {_fmt(s['p_b1_given_a0'])} | "
                        f"{phi} |"
                    )
            lines.append("")
        if r.get("shortcut"):
            s = r["shortcut"]
            lines.append(
                f"Planted shortcut: {s['a']} -> {s['b']}, phi {_fmt(s['phi_source'])} in source, "
                f"{_fmt(s['phi_subset'])} in subset."
            )
            lines.append("")
        for note in r.get("notes", []):
            lines.append(f"- {note}")
        return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------


def _check_seed(seed: Any, caller: str) -> np.random.Generator:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"{caller}: seed must be an int (or None for an unseeded draw), got {seed!r}.")
    return np.random.default_rng(None if seed is None else int(seed))


def _check_count(value: Any, name: str, caller: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{caller}: {name} must be a positive int or None, got {value!r}.")
    if value < 1:
        raise ValueError(f"{caller}: {name} must be a positive int or None, got {value!r}.")
    return int(value)


def _check_rules(rules: Any, argument: str, caller: str, allow_empty: bool) -> list[dict[str, int]]:
    """A rule or sequence of rules -> list of ``{str column: 0|1}``."""
    if isinstance(rules, Mapping):
        rules = [rules]
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
        raise TypeError(
            f"{caller}: {argument} must be a list of rules, each a mapping {{column: 0 or 1}}, got {rules!r}."
        )
    if not rules and not allow_empty:
        raise ValueError(f"{caller}: {argument} is empty; give at least one rule {{column: 0 or 1}}.")
    checked = []
    for k, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise TypeError(
                f"{caller}: {argument}[{k}] must be a mapping {{column: 0 or 1}}, got {rule!r}."
            )
        if not rule:
            raise ValueError(
                f"{caller}: {argument}[{k}] is an empty rule, which would match every row; name at least one "
                "column."
            )
        out = {}
        for column, value in rule.items():
            if not isinstance(column, str):
                raise TypeError(f"{caller}: {argument}[{k}] has a non-string column name {column!r}.")
            if isinstance(value, (bool, np.bool_)):
                value = int(value)
            if not isinstance(value, (int, float, np.integer, np.floating)) or value not in (0, 1):
                raise ValueError(
                    f"{caller}: {argument}[{k}] requires {column}={value!r}; rule values must be 0 or 1."
                )
            out[column] = int(value)
        checked.append(out)
    return checked


def _rule_mask(frame, rule: Mapping[str, int]) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in rule.items():
        mask &= frame[column].to_numpy() == float(value)  # NaN never equals
    return mask


# ---------------------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------------------


def _rule_subset(frame, keep, exclude, max_rows_per_rule, rng, caller: str) -> tuple[np.ndarray, dict[str, Any]]:
    excluded = np.zeros(len(frame), dtype=bool)
    exclude_report = []
    for rule in exclude:
        mask = _rule_mask(frame, rule)
        excluded |= mask
        exclude_report.append({"rule": dict(rule), "matched": int(mask.sum())})
    chosen = np.zeros(len(frame), dtype=bool)
    rules_report, masks = [], []
    for k, rule in enumerate(keep):
        mask = _rule_mask(frame, rule)
        eligible = mask & ~excluded
        rows = np.flatnonzero(eligible)
        if rows.size == 0:
            per_condition = {f"{c}={v}": int((frame[c].to_numpy() == v).sum()) for c, v in rule.items()}
            why = (
                f"matched {int(mask.sum())} of {len(frame)} row(s), all removed by the exclude rules"
                if mask.any()
                else f"matched no rows of {len(frame)} (rows per condition: {per_condition})"
            )
            raise ValueError(
                f"{caller}: keep rule {k} {rule} {why}; fix the rule (column names and 0/1 "
                "values) or drop it — a rule that selects nothing cannot plant its correlation."
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
    return np.flatnonzero(chosen).astype(np.int64), {"rules": rules_report, "exclude": exclude_report}


def _rule_columns(keep, exclude) -> list[str]:
    return list(dict.fromkeys(c for rule in [*keep, *exclude] for c in rule))


def rule_subset(
    table: Any,
    keep: Sequence[Mapping[str, int]] | Mapping[str, int],
    exclude: Sequence[Mapping[str, int]] = (),
    max_rows_per_rule: int | None = None,
    seed: int | None = 0,
    columns: Sequence[str] | None = None,
) -> SubsetResult:
    """Keep the rows that match all entries of any ``keep`` rule and no ``exclude`` rule.

    Example (the CelebA hair-colour -> smiling shortcut, see :func:`celeba_hair_smiling_subset`)::

        rule_subset(reader, keep=[{"Blond_Hair": 1, "Smiling": 1}, {"Black_Hair": 1, "Smiling": 0}])

    Args:
        table: metadata table (see :func:`as_table`).
        keep: rules ``{column: 0 or 1}``; a row is kept when it equals every entry of at least one rule.
            A single mapping is taken as a one-rule list. NaN never matches.
        exclude: rules of the same form; a row matching any of them is dropped (before subsampling).
        max_rows_per_rule: at most this many rows per keep rule, drawn without replacement (seeded) from the
            rule's matches that survive ``exclude`` — a way to balance groups. Each rule draws independently;
            a row chosen by several rules counts once, so with overlapping rules the subset can hold fewer
            than ``len(keep) * max_rows_per_rule`` rows (the report's ``in_subset`` gives each rule's final
            count). ``None``: keep every match.
        seed: seed of the ``numpy.random.Generator`` used for subsampling.
        columns: column names when ``table`` is an array.

    Returns:
        A :class:`SubsetResult`. Report keys besides the common ones: ``rules`` (per keep rule: ``keep``,
        ``matched`` in the source, ``excluded`` (of those, removed by exclude rules), ``selected`` (after
        subsampling), ``in_subset`` (final subset rows matching the rule)) and ``exclude`` (per exclude
        rule: ``rule``, ``matched``). ``pairs`` covers every pair of columns named in the rules, in order
        of first mention.

    Raises:
        ValueError: unknown column (the available ones are listed), a rule column holding values other than
            0/1/NaN, a rule value other than 0/1, an empty rule list or rule, bad ``max_rows_per_rule``, or a
            keep rule that selects nothing (named, with its per-condition counts).
        TypeError: wrongly typed ``keep``/``exclude``/``seed``/``max_rows_per_rule`` or table.
    """
    caller = "rule_subset"
    keep = _check_rules(keep, "keep", caller, allow_empty=False)
    exclude = _check_rules(exclude, "exclude", caller, allow_empty=True)
    max_rows_per_rule = _check_count(max_rows_per_rule, "max_rows_per_rule", caller)
    rng = _check_seed(seed, caller)
    names = _rule_columns(keep, exclude)
    frame = as_table(table, columns, select=names, caller=caller)
    _check_binary(frame, names, caller)
    indices, extra = _rule_subset(frame, keep, exclude, max_rows_per_rule, rng, caller)
    report = {
        "builder": caller,
        "params": {"keep": keep, "exclude": exclude, "max_rows_per_rule": max_rows_per_rule, "seed": seed},
        **_statistics(frame, indices, names, list(itertools.combinations(names, 2))),
        **extra,
        "notes": [],
    }
    return SubsetResult(indices, report)


def _max_two_cells(c_first: int, c_second: int) -> int:
    """Most rows taken from two cells that must get equal counts, or one more in either."""
    lo, hi = min(c_first, c_second), max(c_first, c_second)
    return 2 * lo + (1 if hi > lo else 0)


def _split_two_cells(n: int, c_first: int, c_second: int) -> tuple[int, int]:
    """Split ``n`` rows between two cells as evenly as possible; an odd one goes to the fuller cell (ties:
    the first)."""
    half, odd = divmod(n, 2)
    if not odd:
        return half, half
    return (half + 1, half) if c_first >= c_second else (half, half + 1)


def _n_agree(agreement: float, size: int) -> int:
    return math.floor(agreement * size + 0.5)


def _cell_subset(
    frame, a: str, b: str, agreement: float, size: int | None, rng: np.random.Generator, caller: str
) -> tuple[np.ndarray, dict[str, Any]]:
    x, y = frame[a].to_numpy(), frame[b].to_numpy()
    known = ~(np.isnan(x) | np.isnan(y))
    rows = {
        "a0_b0": np.flatnonzero(known & (x == 0) & (y == 0)),
        "a0_b1": np.flatnonzero(known & (x == 0) & (y == 1)),
        "a1_b0": np.flatnonzero(known & (x == 1) & (y == 0)),
        "a1_b1": np.flatnonzero(known & (x == 1) & (y == 1)),
    }
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
    counts_text = (
        f"available rows (a={a!r}, b={b!r}, NaN dropped): " + ", ".join(f"{c}={avail[c]}" for c in _CELLS)
    )
    if size is None:
        if largest == 0:
            raise ValueError(
                f"{caller}: no subset reaches agreement={agreement}: with balanced cells at most {max_agree} "
                f"agreeing (a1_b1, a0_b0) and {max_disagree} disagreeing (a1_b0, a0_b1) rows can be used; "
                f"{counts_text}. Use a larger table or another agreement."
            )
        # prefer an exact fraction: the largest of the 100 largest feasible sizes with agreement * size whole
        exact = [
            s for s in range(largest, max(largest - _EXACT_SEARCH, 0), -1)
            if fits(s) and abs(agreement * s - round(agreement * s)) < 1e-9
        ]
        size = exact[0] if exact else largest
    elif not fits(size):
        n_agree = _n_agree(agreement, size)
        g11, g00 = _split_two_cells(n_agree, avail["a1_b1"], avail["a0_b0"])
        g10, g01 = _split_two_cells(size - n_agree, avail["a1_b0"], avail["a0_b1"])
        raise ValueError(
            f"{caller}: size={size} with agreement={agreement} needs {n_agree} agreeing rows (a1_b1={g11}, "
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


def _check_pair(a: Any, b: Any, caller: str, names: tuple[str, str] = ("a", "b")) -> tuple[str, str]:
    for name, value in zip(names, (a, b)):
        if not isinstance(value, str):
            raise TypeError(f"{caller}: {name} must be a column name (str), got {value!r}.")
    if a == b:
        raise ValueError(f"{caller}: {names[0]} and {names[1]} are both {a!r}; give two different columns.")
    return a, b


def _check_agreement(agreement: Any, caller: str) -> float:
    if isinstance(agreement, bool) or not isinstance(agreement, (int, float, np.integer, np.floating)):
        raise TypeError(f"{caller}: agreement must be a number in [0, 1], got {agreement!r}.")
    agreement = float(agreement)
    if not 0.0 <= agreement <= 1.0:
        raise ValueError(
            f"{caller}: agreement must be in [0, 1] (1 = a always equals b, 0.5 = independent, 0 = always "
            f"opposite), got {agreement!r}."
        )
    return agreement


_CELL_NOTE = (
    "cells are balanced: a1_b1 and a0_b0 share the agreeing rows equally, a1_b0 and a0_b1 the disagreeing "
    "ones (an odd row goes to the fuller cell), so both marginals are ~0.5 and phi ~ 2 * agreement - 1"
)


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

    The agreeing rows are split equally between the cells ``a=b=1`` and ``a=b=0`` and the disagreeing rows
    equally between ``a=1,b=0`` and ``a=0,b=1`` (an odd row goes to the cell with more rows available), so
    both marginals are balanced (about 0.5) and ``phi ≈ 2 * agreement - 1``: ``agreement=1`` plants a perfect
    correlation, ``0.5`` makes ``a`` and ``b`` independent, ``0`` a perfect anti-correlation. Rows with NaN
    in ``a`` or ``b`` are not candidates. Rows are drawn without replacement within each cell (seeded).

    Args:
        table: metadata table (see :func:`as_table`).
        a: first binary column.
        b: second binary column.
        agreement: fraction of subset rows with ``a == b``, in [0, 1]. The number of agreeing rows is
            ``round(agreement * size)``; the report gives the achieved fraction (exact when
            ``agreement * size`` is whole).
        size: number of rows; ``None``: the largest subset reaching ``agreement``, except that among the 100
            largest feasible sizes the largest one with ``agreement * size`` whole is preferred, so the fraction
            is exact for any agreement with two decimals (e.g. 0.75 gives a multiple of 4).
        seed: seed of the ``numpy.random.Generator`` drawing rows within each cell.
        columns: column names when ``table`` is an array.

    Returns:
        A :class:`SubsetResult`. Report keys besides the common ones: ``rows_dropped_nan``,
        ``agreement_requested``, ``agreement_achieved`` and ``cells`` (``{"available"|"selected": {"a0_b0",
        "a0_b1", "a1_b0", "a1_b1"}}``).

    Raises:
        ValueError: unknown column, non-binary values, ``agreement`` outside [0, 1], ``a == b``, bad ``size``,
            or a ``size``/``agreement`` the table cannot supply (the message gives the cell counts needed and
            available and the largest feasible size).
        TypeError: wrongly typed argument or table.
    """
    caller = "correlated_subset"
    a, b = _check_pair(a, b, caller)
    agreement = _check_agreement(agreement, caller)
    size = _check_count(size, "size", caller)
    rng = _check_seed(seed, caller)
    frame = as_table(table, columns, select=[a, b], caller=caller)
    _check_binary(frame, [a, b], caller)
    indices, extra = _cell_subset(frame, a, b, agreement, size, rng, caller)
    report = {
        "builder": caller,
        "params": {"a": a, "b": b, "agreement": agreement, "size": size, "seed": seed},
        **_statistics(frame, indices, [a, b], [(a, b)]),
        **extra,
        "notes": [_CELL_NOTE],
    }
    return SubsetResult(indices, report)


def balanced_independent_subset(
    table: Any,
    a: str,
    b: str,
    per_cell: int | None = None,
    seed: int | None = 0,
    columns: Sequence[str] | None = None,
) -> SubsetResult:
    """Equal counts in all four ``(a, b)`` cells: ``a`` and ``b`` independent with balanced marginals.

    The held-out set for a shortcut check: a model that learned ``b`` through ``a`` loses accuracy here.
    Rows with NaN in ``a`` or ``b`` are not candidates.

    Args:
        table: metadata table (see :func:`as_table`).
        a: first binary column.
        b: second binary column.
        per_cell: rows per cell; ``None``: as many as the smallest cell holds.
        seed: seed of the ``numpy.random.Generator`` drawing rows within each cell.
        columns: column names when ``table`` is an array.

    Returns:
        A :class:`SubsetResult` of ``4 * per_cell`` rows (phi exactly 0); report keys as for
        :func:`correlated_subset` plus ``per_cell``.

    Raises:
        ValueError: unknown column, non-binary values, ``a == b``, an empty cell, or ``per_cell`` larger than
            the smallest cell (all cell counts are given).
        TypeError: wrongly typed argument or table.
    """
    caller = "balanced_independent_subset"
    a, b = _check_pair(a, b, caller)
    per_cell = _check_count(per_cell, "per_cell", caller)
    rng = _check_seed(seed, caller)
    frame = as_table(table, columns, select=[a, b], caller=caller)
    _check_binary(frame, [a, b], caller)
    x, y = frame[a].to_numpy(), frame[b].to_numpy()
    avail = {f"a{i}_b{j}": int(np.sum((x == i) & (y == j))) for i in (0, 1) for j in (0, 1)}
    smallest = min(avail.values())
    counts_text = f"cells (a={a!r}, b={b!r}, NaN dropped): " + ", ".join(f"{c}={avail[c]}" for c in _CELLS)
    if smallest == 0:
        empty = [c for c in _CELLS if avail[c] == 0]
        raise ValueError(
            f"{caller}: cell(s) {empty} have no rows, so a and b cannot be made independent with balanced "
            f"marginals; {counts_text}. Use a larger table or other columns."
        )
    if per_cell is None:
        per_cell = smallest
    elif per_cell > smallest:
        raise ValueError(
            f"{caller}: per_cell={per_cell} but the smallest cell has {smallest} rows; {counts_text}. Pass "
            f"per_cell <= {smallest} (or None)."
        )
    indices, extra = _cell_subset(frame, a, b, 0.5, 4 * per_cell, rng, caller)
    report = {
        "builder": caller,
        "params": {"a": a, "b": b, "per_cell": per_cell, "seed": seed},
        **_statistics(frame, indices, [a, b], [(a, b)]),
        **extra,
        "per_cell": per_cell,
        "notes": [f"{per_cell} rows in each of the four cells: a and b independent, both marginals 0.5"],
    }
    return SubsetResult(indices, report)


def celeba_hair_smiling_subset(
    attributes: Any,
    names: Sequence[str] | None = None,
    seed: int | None = 0,
    max_rows_per_rule: int | None = None,
) -> SubsetResult:
    """The paper's CelebA shortcut subset: hair colour predicts smiling (Patronus, METHOD.md section 6).

    Keeps blond- or brown-haired people who smile and black-haired people who do not, so in the subset
    ``Black_Hair`` and ``Smiling`` have phi = -1. Only rows with exactly one of ``Black_Hair``,
    ``Blond_Hair``, ``Brown_Hair`` set are candidates (CelebA marks some faces with two hair colours; such
    a face would make the planted rule ambiguous). Other hair attributes (``Gray_Hair``, ``Bald``) are not
    constrained. The paper reports 61,214 images for this subset (of all 202,599 CelebA images).

    Built on :func:`rule_subset` with three keep rules::

        {Black_Hair: 0, Blond_Hair: 1, Brown_Hair: 0, Smiling: 1}
        {Black_Hair: 0, Blond_Hair: 0, Brown_Hair: 1, Smiling: 1}
        {Black_Hair: 1, Blond_Hair: 0, Brown_Hair: 0, Smiling: 0}

    Args:
        attributes: a :class:`~monai_patronus.data.natural.CelebAReader` (or any object with
            ``.attributes`` and ``.attribute_names``), or a table (see :func:`as_table`) with 0/1 values.
        names: column names when ``attributes`` is an ``(N, 40)`` array or tensor.
        seed: seed for subsampling (only used with ``max_rows_per_rule``).
        max_rows_per_rule: optional cap on each of the three groups (see :func:`rule_subset`).

    Returns:
        A :class:`SubsetResult` (report as for :func:`rule_subset`, ``builder`` =
        ``"celeba_hair_smiling_subset"``), plus ``shortcut``: ``{"a": "Black_Hair", "b": "Smiling",
        "phi_source", "phi_subset"}``. Select images with ``result.select(reader.filenames)``.

    Raises:
        ValueError: missing CelebA columns, values other than 0/1/NaN (raw CelebA -1/1 must be mapped to
            0/1), or a group with no rows.
        TypeError: wrongly typed argument or table.
    """
    caller = "celeba_hair_smiling_subset"
    black, blond, brown = CELEBA_HAIR_COLUMNS
    smiling = CELEBA_SMILING_COLUMN
    keep = [
        {black: 0, blond: 1, brown: 0, smiling: 1},
        {black: 0, blond: 0, brown: 1, smiling: 1},
        {black: 1, blond: 0, brown: 0, smiling: 0},
    ]
    max_rows_per_rule = _check_count(max_rows_per_rule, "max_rows_per_rule", caller)
    rng = _check_seed(seed, caller)
    cols = [*CELEBA_HAIR_COLUMNS, smiling]
    frame = as_table(attributes, names, select=cols, caller=caller)
    _check_binary(frame, cols, caller)
    indices, extra = _rule_subset(frame, keep, [], max_rows_per_rule, rng, caller)
    stats = _statistics(frame, indices, cols, list(itertools.combinations(cols, 2)))
    pair = next(p for p in stats["pairs"] if (p["a"], p["b"]) == (black, smiling))
    report = {
        "builder": caller,
        "params": {"max_rows_per_rule": max_rows_per_rule, "seed": seed},
        **stats,
        **extra,
        "shortcut": {
            "a": black,
            "b": smiling,
            "phi_source": pair["source"]["phi"],
            "phi_subset": pair["subset"]["phi"],
        },
        "notes": [
            (
                "blond/brown hair -> smiling, black hair -> not smiling; only rows with exactly one of "
                "Black_Hair, Blond_Hair, Brown_Hair set"
            )
        ],
    }
    return SubsetResult(indices, report)


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

    The medical shortcut case of the paper (a pacemaker standing in for cardiomegaly): with
    ``agreement=1.0`` every image with the device has the finding and every image without it does not.
    Built on :func:`correlated_subset` (balanced cells, ``phi ≈ 2 * agreement - 1``). Items whose device or
    finding label is NaN (``uncertain="ignore"`` upstream) are not candidates for these two columns.

    Args:
        datalist: items from :func:`~monai_patronus.data.chexpert.load_chexpert_datalist` (any sequence of
            mappings with a ``"label"`` array aligned with ``label_columns``).
        device: the device label column.
        finding: the finding label column.
        agreement: fraction of chosen items where device == finding, in [0, 1].
        label_columns: names of the ``"label"`` entries, in order.
        seed: seed for the draw within each cell.
        size: number of items; ``None``: the largest achievable.

    Returns:
        A :class:`SubsetResult` with ``a`` = ``device`` and ``b`` = ``finding`` in the report (keys as for
        :func:`correlated_subset`); ``result.select(datalist)`` gives the chosen items.

    Raises:
        ValueError: ``device``/``finding`` not in ``label_columns`` (listed), an item without ``"label"`` or
            with a label of the wrong length (item named), non-binary labels, or an infeasible
            ``size``/``agreement`` (counts given).
        TypeError: ``datalist`` is not a sequence of mappings, or wrongly typed arguments.
    """
    caller = "chexpert_device_finding_subset"
    device, finding = _check_pair(device, finding, caller, names=("device", "finding"))
    label_columns = [str(c) for c in label_columns]
    _require_columns([device, finding], label_columns, caller, argument="device/finding")
    agreement = _check_agreement(agreement, caller)
    size = _check_count(size, "size", caller)
    rng = _check_seed(seed, caller)
    if isinstance(datalist, (str, bytes, Mapping)) or not isinstance(datalist, Sequence):
        raise TypeError(
            f"{caller}: datalist must be a list of dicts with a 'label' array (from load_chexpert_datalist), "
            f"got {type(datalist).__name__}."
        )
    if len(datalist) == 0:
        raise ValueError(f"{caller}: datalist is empty; nothing to select from.")
    j_device, j_finding = label_columns.index(device), label_columns.index(finding)
    values = np.empty((len(datalist), 2), dtype=np.float64)
    for i, item in enumerate(datalist):
        if not isinstance(item, Mapping) or "label" not in item:
            raise ValueError(
                f"{caller}: datalist[{i}] has no 'label' entry (got {type(item).__name__}); pass the items from "
                "load_chexpert_datalist."
            )
        label = _to_numpy(item["label"]).astype(np.float64).reshape(-1)
        if label.size != len(label_columns):
            raise ValueError(
                f"{caller}: datalist[{i}]['label'] has {label.size} values but label_columns has "
                f"{len(label_columns)}; pass the label_columns the datalist was loaded with."
            )
        values[i] = label[j_device], label[j_finding]
    frame = as_table(values, [device, finding], caller=caller)
    _check_binary(frame, [device, finding], caller)
    indices, extra = _cell_subset(frame, device, finding, agreement, size, rng, caller)
    report = {
        "builder": caller,
        "params": {"device": device, "finding": finding, "agreement": agreement, "size": size, "seed": seed},
        **_statistics(frame, indices, [device, finding], [(device, finding)]),
        **extra,
        "notes": [_CELL_NOTE, "items with a NaN device or finding label (uncertain, ignored) are not candidates"],
    }
    return SubsetResult(indices, report)
