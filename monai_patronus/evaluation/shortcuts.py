"""Shortcut-learning reports: attribute pairs that a trained Patronus model represents with the same prototypes.

Per attribute pair ``(A, B)``: the shared top-``n`` prototypes by ``AUROC[a, k] = max(AUROC(y_a, s_k),
AUROC(y_a, -s_k))`` (score: max over shared ``k`` of ``min(AUROC[A, k], AUROC[B, k])``), the co-occurrence of ``A``
and ``B`` on the analysed and held-out data, and a counterfactual: move the prototype representing ``A`` toward ``A``
in images lacking ``A``, regenerate from their DDIM inversion and judge ``A`` and ``B``, beside a control edit of the
prototype least associated with either. Judges are the user's ``image_judges`` or linear probes fitted where ``A``
and ``B`` are independent (held-out data, else a balanced subset); a pair whose probes' fitting rows have
``|phi| > max_judge_phi`` is not tested (:attr:`ShortcutPair.counterfactual_skipped`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from monai_patronus.data.batches import gather_images
from monai_patronus.data.subsets import pair_statistics
from monai_patronus.evaluation.attributes import (
    AttributeAUROC,
    _as_array,
    attribute_auroc,
    check_activations,
    check_labels,
)
from monai_patronus.inferers import PatronusInferer
from monai_patronus.utils import json_safe

__all__ = [
    "ShortcutPair",
    "ShortcutReport",
    "PairJudges",
    "rank_shortcut_pairs",
    "fit_activation_probes",
    "fit_pair_judges",
    "counterfactual_test",
    "shortcut_report",
    "write_shortcut_report",
]

logger = logging.getLogger("monai_patronus.evaluation")

Judge = Callable[[torch.Tensor], torch.Tensor]

PROBE = "linear probe on s"
IMAGE_CLASSIFIER = "image classifier"


@dataclass
class ShortcutPair:
    """The evidence that attributes ``A`` and ``B`` share prototypes (see the module docstring).

    Attributes:
        attributes: ``(A, B)``; ``A`` is the attribute the representative prototype depicts (higher held-out AUROC).
        score: ``max`` over shared prototypes of ``min(AUROC[A, k], AUROC[B, k])`` on the analysed data.
        shared_prototypes: prototypes in both attributes' top-``n``, by descending ``min`` AUROC.
        auroc, heldout_auroc: ``{attribute: [AUROC of each shared prototype]}`` on the analysed / held-out data.
        prototype: the representative prototype edited by the counterfactual.
        direction: ``+1`` when ``s_k`` rises with ``A`` (the counterfactual raises it), ``-1`` when it falls.
        cooccurrence, heldout_cooccurrence: :func:`pair_statistics` of ``A`` and ``B`` on the analysed / held-out data.
        counterfactual: :func:`counterfactual_test` results and the choices behind them (``None`` when not run).
        judges: ``{attribute: {"kind", "fitted_on", "n", "phi", "fit_auroc"}}`` of the counterfactual's judges
            (``fit_auroc``: a probe's AUROC on its own fitting rows, ``None`` for image classifiers).
        counterfactual_skipped: why the counterfactual was not run; ``None`` when it ran or was not attempted.
    """

    attributes: tuple[str, str]
    score: float
    shared_prototypes: list[int]
    auroc: dict[str, list[float]]
    heldout_auroc: dict[str, list[float]] | None
    prototype: int
    direction: int
    cooccurrence: dict
    heldout_cooccurrence: dict | None = None
    counterfactual: dict | None = None
    judges: dict | None = None
    counterfactual_skipped: str | None = None


@dataclass
class ShortcutReport:
    """Ranked :class:`ShortcutPair` s and the attribute-prototype AUROC matrices they come from."""

    pairs: list[ShortcutPair]
    auroc: AttributeAUROC
    heldout: AttributeAUROC | None
    top_n: int
    settings: dict = field(default_factory=dict)
    edits: dict = field(default_factory=dict, repr=False)  # pair rank (1-based) -> regenerated images, for figures

    def to_dict(self) -> dict:
        """JSON-serialisable content (floats rounded to 6 digits)."""
        return json_safe(
            {
                "settings": self.settings | {"top_n": self.top_n},
                "attributes": list(self.auroc.names),
                "top_prototypes": {n: self.auroc.top(n, self.top_n) for n in self.auroc.names},
                "auroc": self.auroc.to_dict(),
                "heldout_auroc": None if self.heldout is None else self.heldout.to_dict(),
                "pairs": [asdict(p) for p in self.pairs],
            },
            digits=6,
        )


def rank_shortcut_pairs(
    auroc: AttributeAUROC,
    labels: np.ndarray,
    top_n: int = 3,
    heldout: AttributeAUROC | None = None,
    heldout_labels: np.ndarray | None = None,
    min_score: float = 0.5,
) -> list[ShortcutPair]:
    """Attribute pairs that share top-``top_n`` prototypes, ranked by ``score`` (descending; ties by name), without
    counterfactuals.

    Args:
        auroc, labels: the analysed data's :func:`attribute_auroc` and its ``(N, A)`` checked labels (same columns).
        top_n: prototypes per attribute.
        heldout, heldout_labels: the same on held-out data (both or neither), same attribute names.
        min_score: drop pairs whose score is not above this (0.5 is chance).
    """
    names = list(auroc.names)
    if labels.shape[1] != len(names):
        raise ValueError(
            f"labels have {labels.shape[1]} columns but auroc covers {len(names)}: {names}; pass its labels."
        )
    if (heldout is None) != (heldout_labels is None):
        raise ValueError("rank_shortcut_pairs: give heldout and heldout_labels together, or neither.")
    if heldout is not None and list(heldout.names) != names:
        raise ValueError(f"held-out attributes {list(heldout.names)} differ from {names}; drop them from both sets.")
    matrix = auroc.auroc
    top = {i: [k for k, _ in auroc.top(i, top_n)] for i in range(len(names))}
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            shared = [k for k in top[i] if k in top[j]]
            if not shared:
                continue
            strength = {k: min(matrix[i, k], matrix[j, k]) for k in shared}
            shared.sort(key=lambda k: (-strength[k], k))
            score = float(strength[shared[0]])
            if score <= min_score:
                continue
            # which attribute does the first shared prototype depict? the one it still tells apart on held-out data
            ref = heldout.auroc if heldout is not None else matrix
            k0 = max(shared, key=lambda k: (max(ref[i, k], ref[j, k]), -k))
            a, b = (i, j) if ref[i, k0] >= ref[j, k0] else (j, i)
            held = heldout is not None
            pairs.append(
                ShortcutPair(
                    (names[a], names[b]),
                    score,
                    shared,
                    {names[x]: [float(matrix[x, k]) for k in shared] for x in (a, b)},
                    {names[x]: [float(heldout.auroc[x, k]) for k in shared] for x in (a, b)} if held else None,
                    int(k0),
                    1 if auroc.signed is None or auroc.signed[a, k0] >= 0.5 else -1,
                    pair_statistics(labels[:, a], labels[:, b], names[a], names[b], "the analysed data"),
                    pair_statistics(heldout_labels[:, a], heldout_labels[:, b], names[a], names[b], "the held-out data")
                    if held
                    else None,
                )
            )
    pairs.sort(key=lambda p: (-p.score, p.attributes))
    return pairs


def fit_activation_probes(
    activations: torch.Tensor, labels: np.ndarray, names: Sequence[str], seed: int = 0
) -> dict[str, Judge]:
    """Linear probes ``P(attribute = 1 | s)``: standardised ``s`` and a logistic regression per attribute,
    fitted on the rows labelled for it. Returns ``{name: judge}``; a judge maps activations ``(N, K)`` to
    probabilities ``(N,)``."""
    x = _as_numpy(activations)
    probes = {}
    for a, name in enumerate(names):
        rows = ~np.isnan(labels[:, a])
        y = labels[rows, a]
        if len(np.unique(y)) < 2:
            raise ValueError(
                f"fit_activation_probes: attribute {name!r} has one class over its {int(rows.sum())} labelled rows; "
                "a probe needs both; drop the attribute."
            )
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(x[rows], y)
        probes[name] = _probe_judge(model)
    return probes


def _probe_judge(model) -> Judge:
    def judge(activations: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(model.predict_proba(_as_numpy(activations))[:, 1])

    return judge


@dataclass
class PairJudges:
    """The judges of one pair's counterfactual (see :func:`fit_pair_judges`): ``probes`` on activations (empty when
    refused), the user's ``image_judges``, ``info`` per attribute (as :attr:`ShortcutPair.judges`) and ``refused``
    (why they must not be used, ``None``: they may).
    """

    probes: dict[str, Judge]
    image_judges: dict[str, Judge]
    info: dict[str, dict]
    refused: str | None = None


def fit_pair_judges(
    attributes: tuple[str, str],
    activations: torch.Tensor | np.ndarray,
    labels: object,
    names: Sequence[str],
    heldout: tuple[torch.Tensor | np.ndarray, object] | None = None,
    image_judges: Mapping[str, Judge] | None = None,
    max_judge_phi: float = 0.2,
    seed: int = 0,
) -> PairJudges:
    """Judges for the counterfactual of the pair ``(A, B)``, fitted where ``A`` and ``B`` are independent.

    Per attribute: the user's classifier in ``image_judges``, else a linear probe (:func:`fit_activation_probes`)
    fitted on ``heldout``, else on a balanced subset of the analysed data (as many rows from each ``(A, B)`` cell as
    the smallest holds); the probes are refused when phi(A, B) on their rows is undefined or above ``max_judge_phi``.

    Args:
        attributes: ``(A, B)``, names from ``names``.
        activations, labels: the analysed data, ``(N, K)`` and ``(N, len(names))`` (0/1/NaN).
        names: the attribute names of the label columns (also those of ``heldout``'s labels).
        heldout: ``(activations, labels)`` of held-out data.
        image_judges: ``{attribute: classifier on images}``; only those of ``A`` and ``B`` are used.
        max_judge_phi: the largest ``|phi(A, B)|`` tolerated on the probes' fitting rows.
        seed: for the balanced subset and the probes.
    """
    names = list(names)
    a_name, b_name = attributes
    for n in attributes:
        if n not in names:
            raise ValueError(f"fit_pair_judges: unknown attribute {n!r}; choose from {names}.")
    a, b = names.index(a_name), names.index(b_name)
    chosen = {n: j for n, j in (image_judges or {}).items() if n in attributes}
    info: dict[str, dict] = {
        n: {"kind": IMAGE_CLASSIFIER, "fitted_on": "user-supplied", "n": None, "phi": None, "fit_auroc": None}
        for n in chosen
    }
    need = [n for n in attributes if n not in chosen]
    if not need:
        return PairJudges({}, chosen, info)
    x, y = heldout if heldout is not None else (activations, labels)
    x = _as_numpy(x)
    y, _ = check_labels(y, num_samples=x.shape[0], names=names)
    known = ~np.isnan(y[:, a]) & ~np.isnan(y[:, b])
    rows, source, reason, stats = np.flatnonzero(known), "held-out data", None, {"phi": None}
    if heldout is None:
        cells = {(va, vb): np.flatnonzero(known & (y[:, a] == va) & (y[:, b] == vb)) for va in (0, 1) for vb in (0, 1)}
        smallest = min(len(c) for c in cells.values())
        rng = np.random.default_rng(seed)
        rows = np.sort(np.concatenate([rng.choice(c, smallest, replace=False) for c in cells.values()]))
        source = "balanced subset of the analysed data"
        if smallest == 0:
            empty = ", ".join(f"{a_name}={va} & {b_name}={vb}" for (va, vb), c in cells.items() if len(c) == 0)
            reason = (
                f"no independent judge for {', '.join(map(repr, need))}: no held-out set, and the analysed data "
                f"have no row with {empty}, so no balanced subset exists; a probe fitted on these data would "
                f"read {b_name!r} from the pattern of {a_name!r} (circular). Give held-out data in which "
                f"{a_name!r} and {b_name!r} are independent, or image_judges."
            )
        else:
            source += f" ({smallest} rows per ({a_name}, {b_name}) cell)"
    if reason is None:
        stats = pair_statistics(y[rows, a], y[rows, b], a_name, b_name, source)
    phi = stats["phi"]
    for n in need:
        info[n] = {"kind": PROBE, "fitted_on": source, "n": int(len(rows)), "phi": phi, "fit_auroc": None}
    if reason is None and phi is None:
        reason = (
            f"no probe for {', '.join(map(repr, need))} can be fitted on the {source}: "
            f"phi({a_name}, {b_name}) is undefined there ({stats['phi_note']}); give image_judges."
        )
    elif reason is None and abs(phi) > max_judge_phi:
        reason = (
            f"the probe(s) for {', '.join(map(repr, need))} would be fitted on the {source} (n = {len(rows)}), "
            f"where phi({a_name}, {b_name}) = {phi:.3f} exceeds max_judge_phi = {max_judge_phi:g}: such a probe "
            f"reads {b_name!r} from the pattern of {a_name!r} (circular). Give held-out data in which they are "
            "independent, or image_judges."
        )
    if reason is not None:
        logger.warning("shortcut counterfactual %s <-> %s refused: %s", a_name, b_name, reason)
        return PairJudges({}, chosen, info, reason)
    sub_y = y[rows][:, [names.index(n) for n in need]]
    probes = fit_activation_probes(torch.as_tensor(x[rows]), sub_y, need, seed=seed)
    for j, n in enumerate(need):  # how well the probe tells its attribute apart where it was fitted (optimistic)
        info[n]["fit_auroc"] = roc_auc_score(sub_y[:, j], _as_numpy(probes[n](torch.as_tensor(x[rows]))).reshape(-1))
    return PairJudges(probes, chosen, info)


@torch.no_grad()
def counterfactual_test(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    edits: Sequence[tuple[int, float]],
    judges: Mapping[str, Judge],
    image_judges: Mapping[str, Judge] | None = None,
    num_inference_steps: int = 50,
    depth: int | None = None,
) -> tuple[dict, dict]:
    """Regenerate ``images`` from their DDIM inversion with each edit ``s_k = target`` and judge what changed.

    The images are inverted once; every edit is compared with the unedited regeneration (inversion error cancels).

    Args:
        network, inferer: the trained model.
        images: ``(N, C, *spatial)`` images in [-1, 1].
        edits: ``(prototype k, target value of s_k)`` pairs, each applied alone.
        judges: ``{attribute: judge on activations}`` (e.g. :func:`fit_activation_probes`), applied to the re-encoded
            ``s`` of the unedited and the edited regenerations.
        image_judges: ``{attribute: classifier on images -> P(attribute) (N,)}``; they replace ``judges`` for their
            attributes.
        num_inference_steps, depth: DDIM grid and partial inversion (see :func:`monai_patronus.interpret.edit_images`).

    Returns:
        ``(scores, images)``: ``scores = {"num_images", "edits": [{"prototype", "target", "activation_before",
        "activation_after", "efficacy", "efficacy_images", "efficacy_at_least_half", "attributes": {name: {"flip_rate",
        "p_before", "p_after", "positive_before", "positive_after", "judge"}}}, ...]}``; ``efficacy``: the mean of
        ``(s_k after - s_k before) / (target - s_k before)`` over images not already at the target (``None``: none);
        ``flip_rate``: the share of images whose judged attribute (``p >= 0.5``) changes;
        ``images = {"unedited": (N, ...), "edited": [(N, ...) per edit]}``.
    """
    s = network.encode(images)
    latents = inferer.invert(images, network, s, num_inference_steps, depth=depth)
    unedited = inferer.reconstruct(latents, network, s, num_inference_steps, depth=depth)
    before_s = network.encode(unedited)
    image_judges = dict(image_judges or {})
    names = list(dict.fromkeys([*judges, *image_judges]))
    before = {
        n: _as_numpy(image_judges[n](unedited) if n in image_judges else judges[n](before_s)).reshape(-1) for n in names
    }
    scores: dict = {"num_images": int(images.shape[0]), "edits": []}
    edited_images = []
    for prototype, target in edits:
        prototype, target = int(prototype), float(target)
        target_s = s.clone()
        target_s[:, prototype] = target
        edited = inferer.reconstruct(latents, network, target_s, num_inference_steps, depth=depth)
        after_s = network.encode(edited)
        k_before, k_after = _as_numpy(before_s[:, prototype]), _as_numpy(after_s[:, prototype])
        intended = target - k_before
        asked = np.abs(intended) > 1e-3 * max(1.0, abs(target))
        shares = (k_after[asked] - k_before[asked]) / intended[asked]
        entry = {
            "prototype": prototype,
            "target": target,
            "activation_before": float(k_before.mean()),
            "activation_after": float(k_after.mean()),
            "efficacy": float(np.mean(shares)) if asked.any() else None,
            "efficacy_images": int(asked.sum()),
            "efficacy_at_least_half": float(np.mean(shares >= 0.5)) if asked.any() else None,
            "attributes": {},
        }
        for name in names:
            p0 = before[name]
            p1 = _as_numpy(image_judges[name](edited) if name in image_judges else judges[name](after_s)).reshape(-1)
            entry["attributes"][name] = {
                "flip_rate": float(((p0 >= 0.5) != (p1 >= 0.5)).mean()),
                "p_before": float(p0.mean()),
                "p_after": float(p1.mean()),
                "positive_before": float((p0 >= 0.5).mean()),
                "positive_after": float((p1 >= 0.5).mean()),
                "judge": IMAGE_CLASSIFIER if name in image_judges else PROBE,
            }
        scores["edits"].append(entry)
        edited_images.append(edited)
    return scores, {"unedited": unedited, "edited": edited_images}


def _edit_plan(direction: int, values: np.ndarray, extrapolate_to: float | None) -> list[tuple[str, float]]:
    """``[(label, target)]`` of one kind of edit on a prototype with observed ``values``: raise (plausible
    maximum, then ``extrapolate_to``) for ``direction > 0``, suppress (plausible minimum, then 0) otherwise."""
    target = float(extrapolate_to or 0.0)
    if direction > 0:
        plan = [("plausible maximum", float(values.max())), (f"extrapolated to {target:g}", target)]
    else:
        plan = [("plausible minimum", float(values.min())), ("suppressed (0)", 0.0)]
    return plan if extrapolate_to is not None else plan[:1]


def _image_choice(
    img_y: np.ndarray, a: int, b: int, names: tuple[str, str], phi: float | None, limit: int
) -> tuple[np.ndarray, dict]:
    """Rows lacking ``A``; showing ``B`` when phi(A, B) < 0 (the edit toward ``A`` may remove ``B``), lacking it
    otherwise (it may add ``B``); rows lacking ``A`` whatever ``B`` when fewer than 2 such rows exist."""
    a_name, b_name = names
    b_value = 1 if phi is not None and phi < 0 else 0
    rows = np.flatnonzero((img_y[:, a] == 0) & (img_y[:, b] == b_value))
    fallback = rows.size < 2
    sign = "undefined" if phi is None else ("negative" if phi < 0 else "positive")
    with_b = f"{'with' if b_value else 'without'} {b_name}"
    if fallback:
        rows = np.flatnonzero(img_y[:, a] == 0)
        description = f"without {a_name} (fewer than 2 images without {a_name} and {with_b}; {b_name} as it comes)"
    else:
        description = (
            f"without {a_name} and {with_b} (phi {sign}: the edit toward {a_name} "
            f"{'may remove' if b_value else 'may add'} {b_name})"
        )
    choice = dict(a_value=0, b_value=None if fallback else b_value, association=sign, phi=phi, fallback=fallback)
    choice["description"] = description
    return rows[:limit], choice


def shortcut_report(
    network: nn.Module,
    inferer: PatronusInferer,
    activations: torch.Tensor,
    labels: object,
    names: Sequence[str] | None = None,
    top_n: int = 3,
    heldout: tuple[torch.Tensor, object] | None = None,
    images: torch.Tensor | Iterable | None = None,
    image_labels: object | None = None,
    num_pairs: int = 3,
    num_counterfactual: int = 16,
    extrapolate_to: float | None = 3.0,
    image_judges: Mapping[str, Judge] | None = None,
    num_inference_steps: int = 50,
    depth: int | None = None,
    uncertain: str = "error",
    on_constant: str = "error",
    seed: int = 0,
    image_key: str = "image",
    max_judge_phi: float = 0.2,
) -> ShortcutReport:
    """Rank attribute pairs by shared prototypes and test the top ``num_pairs`` counterfactually.

    Args:
        network, inferer: the trained model.
        activations, labels: ``(N, K)`` activations and ``(N, A)`` labels of the analysed (training) data.
        names: attribute names (default ``attr0`` ...).
        top_n: top prototypes per attribute.
        heldout: ``(activations, labels)`` of held-out data in which the attributes are independent.
        images, image_labels: images for the counterfactual, ``(M, C, *spatial)`` or an iterable of batches in the
            order of ``image_labels`` (``(M, A)``); without them no counterfactual is run.
        num_pairs: pairs to test counterfactually, from the top of the ranking.
        num_counterfactual: at most this many images per test (recorded in ``counterfactual["image_choice"]``).
        extrapolate_to: a prototype that rises with ``A`` is edited to its plausible maximum (over the analysed data)
            and to this value (the paper's 3); one that falls, to its plausible minimum and 0; ``None``: the extreme
            only. The control gets the same kind.
        image_judges: optional image classifiers per attribute; they win over probes.
        num_inference_steps, depth: DDIM grid and partial inversion for the edits.
        uncertain, on_constant: label handling (see :func:`monai_patronus.evaluation.attribute_auroc`).
        seed: for the probes and the balanced subset.
        image_key: the images' key when ``images`` yields dict batches.
        max_judge_phi: skip a pair's counterfactual when its probes would be fitted where ``|phi(A, B)|`` exceeds this.
    """
    if (images is None) != (image_labels is None):
        raise ValueError("shortcut_report: give images and image_labels together (for the counterfactual), or neither.")
    activations = check_activations(activations, min_samples=2)
    y, names = check_labels(labels, num_samples=activations.shape[0], names=names, uncertain=uncertain)
    result = attribute_auroc(activations, y, names, on_constant=on_constant)
    keep = [names.index(n) for n in result.names]
    y = y[:, keep]
    held, held_y, h_act = None, None, None
    if heldout is not None:
        h_act, h_labels = heldout
        h_act = check_activations(h_act, name="heldout activations", min_samples=2)
        held_y, _ = check_labels(h_labels, num_samples=h_act.shape[0], names=names, uncertain=uncertain)
        held_y = held_y[:, keep]
        held = attribute_auroc(h_act, held_y, result.names, on_constant="error")
    pairs = rank_shortcut_pairs(result, y, top_n, held, held_y)
    act = _as_numpy(activations)
    edits: dict = {}
    if images is not None and num_pairs > 0 and pairs:
        img_y, _ = check_labels(
            image_labels,
            num_samples=images.shape[0] if isinstance(images, torch.Tensor) else None,
            names=names,
            uncertain=uncertain,
        )
        img_y = img_y[:, keep]
        for rank, pair in enumerate(pairs[:num_pairs], start=1):
            a, b = (result.names.index(n) for n in pair.attributes)
            judges = fit_pair_judges(
                pair.attributes,
                act,
                y,
                result.names,
                heldout=(h_act, held_y) if heldout is not None else None,
                image_judges=image_judges,
                max_judge_phi=max_judge_phi,
                seed=seed,
            )
            pair.judges = judges.info
            if judges.refused is not None:
                pair.counterfactual_skipped = judges.refused
                continue
            rows, choice = _image_choice(img_y, a, b, pair.attributes, pair.cooccurrence["phi"], num_counterfactual)
            if rows.size == 0:
                pair.counterfactual_skipped = f"no image without {pair.attributes[0]!r} for the counterfactual"
                logger.warning("shortcut_report: %s; skipped.", pair.counterfactual_skipped)
                continue
            if isinstance(images, torch.Tensor):
                subset = images[torch.as_tensor(rows)]
            else:
                found = gather_images(images, rows.tolist(), image_key)
                subset = torch.stack([found[int(r)] for r in rows])
            subset = subset.to(next(network.parameters()).device)
            k = pair.prototype
            # control: the other prototype least associated with either attribute of the pair, same kind of edit
            strength = np.maximum(result.auroc[a], result.auroc[b])
            strength[k] = np.inf
            control = int(np.argmin(strength)) if result.auroc.shape[1] > 1 else k
            plan = _edit_plan(pair.direction, act[:, k], extrapolate_to)
            control_plan = _edit_plan(pair.direction, act[:, control], extrapolate_to)
            edit_list = [(k, t) for _, t in plan] + [(control, t) for _, t in control_plan]
            scores, pictures = counterfactual_test(
                network, inferer, subset, edit_list, judges.probes, judges.image_judges, num_inference_steps, depth
            )
            tests, controls = scores["edits"][: len(plan)], scores["edits"][len(plan) :]
            for (label, _), (control_label, _), test, ctrl in zip(plan, control_plan, tests, controls):
                for entry, name in ((test, label), (ctrl, control_label)):
                    entry["label"] = name
                    for attribute, r in entry["attributes"].items():
                        r["judge_fitted_on"] = judges.info[attribute]["fitted_on"]
                test["control"] = ctrl
            pair.counterfactual = {
                "prototype": k,
                "direction": pair.direction,
                "control_prototype": control,
                "control_auroc": {n: float(result.auroc[x, control]) for n, x in zip(pair.attributes, (a, b))},
                "num_images": scores["num_images"],
                "image_rows": rows.tolist(),
                "image_choice": choice,
                "edits": tests,
            }
            edits[rank] = {
                "unedited": pictures["unedited"],
                "rows": pictures["edited"][: len(plan)],
                "labels": [label for label, _ in plan],
                "control": pictures["edited"][-1],
            }
    settings = dict(num_pairs=num_pairs, num_counterfactual=num_counterfactual, extrapolate_to=extrapolate_to)
    settings |= dict(num_inference_steps=num_inference_steps, depth=depth, uncertain=uncertain, seed=seed)
    return ShortcutReport(pairs, result, held, top_n, settings | {"max_judge_phi": max_judge_phi}, edits)


def write_shortcut_report(
    report: ShortcutReport, output_dir: str | Path, title: str = "Shortcut report"
) -> dict[str, Path]:
    """Write ``shortcuts.json``, ``shortcuts.md`` (readable page), ``auroc_heatmap.png`` and, per tested pair,
    ``counterfactual_<n>.png`` (rows: unedited regeneration | edited | control edit). Returns the paths."""
    from monai_patronus.interpret.figures import plot_auroc_matrix, plot_image_rows

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "shortcuts.json", "markdown": out / "shortcuts.md", "heatmap": out / "auroc_heatmap.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=1))
    heading = "AUROC(attribute, prototype) = max(AUROC(y, s_k), AUROC(y, -s_k))"
    plot_auroc_matrix(report.auroc.auroc, report.auroc.names, path=paths["heatmap"], title=heading)
    lines = [
        f"# {title}",
        "",
        "Attribute pairs that share top prototypes, strongest first. Score: max over shared "
        "prototypes of min(AUROC_A, AUROC_B) on the analysed data (0.5 = chance).",
        "",
        f"![AUROC heat-map]({paths['heatmap'].name})",
        "",
    ]
    if not report.pairs:
        lines += ["No attribute pair shares a top prototype: no shortcut evidence.", ""]
    for n, pair in enumerate(report.pairs, start=1):
        a, b = pair.attributes
        lines += [
            f"## {n}. {a} <-> {b} (score {pair.score:.3f})",
            "",
            f"- Shared top-{report.top_n} prototypes: {', '.join(map(str, pair.shared_prototypes))}; "
            f"representative prototype {pair.prototype} ({'rises' if pair.direction > 0 else 'falls'} with {a}).",
            "",
            f"| prototype | AUROC {a} | AUROC {b} |"
            + (f" held-out {a} | held-out {b} |" if pair.heldout_auroc else ""),
            "|---|---|---|" + ("---|---|" if pair.heldout_auroc else ""),
        ]
        for i, k in enumerate(pair.shared_prototypes):
            row = f"| {k} | {pair.auroc[a][i]:.3f} | {pair.auroc[b][i]:.3f} |"
            if pair.heldout_auroc:
                row += f" {pair.heldout_auroc[a][i]:.3f} | {pair.heldout_auroc[b][i]:.3f} |"
            lines.append(row)
        lines.append("")
        cooccurrence = {"Co-occurrence in the analysed data": pair.cooccurrence, "Held-out": pair.heldout_cooccurrence}
        for where, co in cooccurrence.items():
            if co:
                lines.append(
                    f"- {where} (n = {co['rows']}): phi = {_fmt(co['phi'], co)}, P({b} | {a}) = "
                    f"{_fmt(co['p_b1_given_a1'])}, P({b} | not {a}) = {_fmt(co['p_b1_given_a0'])}."
                )
        if pair.judges:
            lines.append("- Judges: " + "; ".join(f"{name}: {_judge_text(j)}" for name, j in pair.judges.items()) + ".")
        if pair.counterfactual_skipped:
            lines.append(f"- **Counterfactual not run:** {pair.counterfactual_skipped}")
        cf = pair.counterfactual
        if cf:
            verb = "raised" if cf["direction"] > 0 else "suppressed"
            lines += [
                f"- Counterfactual on {cf['num_images']} images {cf['image_choice']['description']}: prototype "
                f"{cf['prototype']} {verb} toward {a} and regenerated from the DDIM inversion, beside the unedited "
                f"regeneration. Control: prototype {cf['control_prototype']}, the least associated with either "
                f"attribute (AUROC {a} {cf['control_auroc'][a]:.3f}, {b} {cf['control_auroc'][b]:.3f}), {verb} the "
                "same way. Efficacy: the share of the intended change of s_k the re-encoded regeneration shows.",
                "",
                "| edit | s_k before -> after | efficacy | attribute | flip rate | judged positive before -> "
                "after | control edit | control efficacy | control flip rate |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for e in cf["edits"]:
                c = e["control"]
                for name, r in e["attributes"].items():
                    cr = c["attributes"][name]
                    lines.append(
                        f"| {e['label']} ({e['target']:.3f}) | {e['activation_before']:.3f} -> "
                        f"{e['activation_after']:.3f} | {_fmt(e['efficacy'])} | {name} | {r['flip_rate']:.2f} "
                        f"| {r['positive_before']:.2f} -> {r['positive_after']:.2f} | {c['label']} "
                        f"({c['target']:.3f}) | {_fmt(c['efficacy'])} | {cr['flip_rate']:.2f} |"
                    )
            if n in report.edits:
                pics = report.edits[n]
                figure = out / f"counterfactual_{n}.png"
                plot_image_rows(
                    [pics["unedited"][:8], *(r[:8] for r in pics["rows"]), pics["control"][:8]],
                    row_labels=["unedited", *pics["labels"], f"control {cf['control_prototype']}"],
                    title=f"{a} <-> {b}: prototype {cf['prototype']} edited",
                    path=figure,
                )
                paths[f"counterfactual_{n}"] = figure
                lines += ["", f"![counterfactual]({figure.name})"]
        lines.append("")
    paths["markdown"].write_text("\n".join(lines))
    return paths


def _judge_text(judge: dict) -> str:
    if judge["kind"] == IMAGE_CLASSIFIER:
        return "image classifier (user-supplied)"
    return (
        f"{judge['kind']} fitted on the {judge['fitted_on']} (n = {judge['n']}, phi = {_fmt(judge['phi'])}, "
        f"AUROC on its fitting rows {_fmt(judge['fit_auroc'])})"
    )


def _fmt(value: float | None, stats: dict | None = None) -> str:
    if value is None:
        return f"undefined ({stats['phi_note']})" if stats and stats.get("phi_note") else "undefined"
    return f"{value:.3f}"


def _as_numpy(value: object) -> np.ndarray:
    return _as_array(value, "activations")
