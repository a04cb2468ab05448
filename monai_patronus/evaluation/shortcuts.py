"""Shortcut-learning reports: attribute pairs that a trained Patronus model represents with the same prototypes.

Patronus's promise to clinicians is that it catches a model learning a shortcut (a pacemaker standing in for
cardiomegaly; hair colour standing in for smiling). The evidence, per attribute pair ``(A, B)``:

1. **Shared prototypes.** For every attribute, its top-``n`` prototypes by
   ``AUROC[a, k] = max(AUROC(y_a, s_k), AUROC(y_a, -s_k))`` on the analysed data (the model's training
   distribution). Two attributes that should be independent but share top prototypes are represented by the
   same visual pattern. Pairs are ranked by ``score = max over shared k of min(AUROC[A, k], AUROC[B, k])``: a
   prototype that tells *both* attributes apart well ranks high; a coincidental overlap of weak prototypes
   ranks low.
2. **Co-occurrence** of ``A`` and ``B`` in the analysed data (phi, the 2x2 counts, ``P(B | A)``), and, given a
   held-out set in which they are independent, the shared prototype's AUROC there: a shortcut keeps its AUROC
   for the attribute it really depicts and loses it for the other.
3. **Counterfactual.** Move the prototype that represents ``A`` (the shared prototype with the higher
   held-out AUROC for one of the two) toward ``A`` in images lacking ``A``: raise it when it rises with ``A``,
   suppress it when it falls with ``A``. The images show ``B`` or not according to the sign of the ``A``-``B``
   association in the analysed data: they lack ``B`` when phi >= 0 (can the edit *add* ``B``?) and show it
   when phi < 0 (can it *remove* ``B``, the paper's black hair / smiling case). The images are regenerated from
   their DDIM inversion with the edit, and the judged ``A`` and ``B`` are compared with the unedited
   regeneration. A control edit applies the same kind of edit (raise to its own plausible maximum and
   ``extrapolate_to``, or suppress to its own plausible minimum and ``0``) to the other prototype least
   associated with either attribute (its AUROCs are reported: when every prototype depicts the pattern, the
   control flips too, and says so). Each edit reports its efficacy, the share of the intended change of
   ``s_k`` that the re-encoded regeneration shows (0: the edit did not take).

   **Judges must not be circular.** A judge fitted where ``A`` and ``B`` co-occur reads ``B`` from ``A``'s
   pattern (with phi = 1 the two probes are the same function), so ``B`` would "flip" whenever ``A`` does.
   Judges therefore come, per attribute, from (a) the user's ``image_judges``, else (b) linear probes on the
   held-out activations, else (c) linear probes on a balanced subset of the analysed data (equal counts in
   the four ``(A, B)`` cells). phi(A, B) is computed on the probes' fitting rows; when ``|phi|`` exceeds
   ``max_judge_phi`` the pair's counterfactual is not run and the report says why
   (:attr:`ShortcutPair.counterfactual_skipped`). :attr:`ShortcutPair.judges` says which judge was used.

Search and scores live here; :func:`write_shortcut_report` renders JSON, Markdown and PNG figures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from monai_patronus.data.batches import gather_images
from monai_patronus.data.subsets import pair_statistics
from monai_patronus.utils import json_safe
from monai_patronus.evaluation.attributes import AttributeAUROC, attribute_auroc, check_activations, check_int, check_labels

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
        attributes: ``(A, B)``; ``A`` is the attribute the representative prototype depicts (higher held-out
            AUROC, or higher AUROC on the analysed data without a held-out set).
        score: ``max`` over shared prototypes of ``min(AUROC[A, k], AUROC[B, k])`` on the analysed data.
        shared_prototypes: prototypes in both attributes' top-``n``, by descending ``min`` AUROC.
        auroc: ``{attribute: [AUROC of each shared prototype]}`` on the analysed data.
        heldout_auroc: the same on the held-out data (``None`` without it).
        prototype: the representative prototype edited by the counterfactual (the first shared one, or the
            one whose held-out AUROC for ``A`` is highest).
        direction: ``+1`` when ``s_k`` rises with ``A`` (the counterfactual raises it), ``-1`` when it falls
            (the counterfactual suppresses it).
        cooccurrence: :func:`pair_statistics` of ``A`` and ``B`` on the analysed data.
        heldout_cooccurrence: the same on the held-out data (``None`` without it).
        counterfactual: :func:`counterfactual_test` results and the choices behind them (``None`` when not run).
        judges: ``{attribute: {"kind", "fitted_on", "n", "phi", "fit_auroc"}}``: the judge of each attribute of
            the counterfactual (``"image classifier"`` or ``"linear probe on s"``), the data it was fitted on, the
            number of fitting rows, phi(A, B) on them and the probe's AUROC on them (an optimistic measure of its
            quality: a judge near 0.5 cannot tell the attribute apart, so its flips mean nothing); ``None`` for
            image classifiers. ``None`` when no counterfactual was attempted for the pair.
        counterfactual_skipped: why the counterfactual was not run (e.g. only circular judges were
            available, or no image lacks ``A``); ``None`` when it ran or was not attempted.
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
                "heldout_auroc": self.heldout.to_dict() if self.heldout is not None else None,
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
    """Attribute pairs that share top-``top_n`` prototypes, ranked by ``score`` (descending; ties by name).

    Args:
        auroc: the attribute-prototype AUROC on the analysed data (:func:`attribute_auroc`).
        labels: the analysed data's ``(N, A)`` labels (after :func:`check_labels`), columns as ``auroc.names``.
        top_n: prototypes per attribute.
        heldout, heldout_labels: the same on held-out data (both or neither); same attribute names.
        min_score: drop pairs whose score is not above this (0.5 is chance).

    Returns:
        the ranked pairs (without counterfactuals).
    """
    check_int("rank_shortcut_pairs", "top_n", top_n, 1)
    names = list(auroc.names)
    if labels.shape[1] != len(names):
        raise ValueError(
            f"rank_shortcut_pairs: labels have {labels.shape[1]} columns but auroc covers {len(names)} attributes "
            f"{names}; pass the labels the AUROC was computed from."
        )
    if (heldout is None) != (heldout_labels is None):
        raise ValueError("rank_shortcut_pairs: give heldout and heldout_labels together, or neither.")
    if heldout is not None and list(heldout.names) != names:
        raise ValueError(
            f"rank_shortcut_pairs: held-out attributes {list(heldout.names)} differ from {names}; analyse the same "
            "attributes on both sets (a constant attribute skipped on one set must be dropped from both)."
        )
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
            pairs.append(
                ShortcutPair(
                    attributes=(names[a], names[b]),
                    score=score,
                    shared_prototypes=shared,
                    auroc={names[x]: [float(matrix[x, k]) for k in shared] for x in (a, b)},
                    heldout_auroc=(
                        {names[x]: [float(heldout.auroc[x, k]) for k in shared] for x in (a, b)}
                        if heldout is not None
                        else None
                    ),
                    prototype=int(k0),
                    direction=1 if auroc.signed is None or auroc.signed[a, k0] >= 0.5 else -1,
                    cooccurrence=pair_statistics(labels[:, a], labels[:, b], names[a], names[b], "the analysed data"),
                    heldout_cooccurrence=(
                        pair_statistics(heldout_labels[:, a], heldout_labels[:, b], names[a], names[b], "the held-out data")
                        if heldout_labels is not None
                        else None
                    ),
                )
            )
    pairs.sort(key=lambda p: (-p.score, p.attributes))
    return pairs


def fit_activation_probes(activations: torch.Tensor, labels: np.ndarray, names: Sequence[str], seed: int = 0) -> dict[str, Judge]:
    """Linear probes ``P(attribute = 1 | s)``: standardised ``s`` and a logistic regression per attribute,
    fitted on the rows labelled for it. Returns ``{name: judge}``; a judge maps activations ``(N, K)`` to
    probabilities ``(N,)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
    """The judges of one pair's counterfactual (see :func:`fit_pair_judges`).

    Attributes:
        probes: ``{attribute: judge on activations}`` for the attributes without an image classifier (empty
            when refused).
        image_judges: ``{attribute: classifier on images}`` supplied by the user.
        info: ``{attribute: {"kind", "fitted_on", "n", "phi", "fit_auroc"}}`` (for a refused probe: the data it
            would have been fitted on and its phi; ``fit_auroc``: the probe's AUROC on its own fitting rows, an
            optimistic measure of how well it tells its attribute apart, ``None`` when not fitted).
        refused: why these judges must not be used (``None``: they may).
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

    Per attribute: (a) the user's image classifier in ``image_judges`` wins; else a linear probe
    (:func:`fit_activation_probes`) fitted (b) on the held-out set when given (its rows with both ``A`` and
    ``B`` labelled), else (c) on a balanced subset of the analysed data: the same number of rows (the
    smallest cell's count, drawn with ``seed``) from each of the four ``(A, B)`` cells; (c) needs all four
    cells non-empty. phi(A, B) is computed on the probes' fitting rows and the probes are refused when
    ``|phi| > max_judge_phi`` (or phi is undefined): a probe fitted where ``A`` and ``B`` co-occur reads ``B``
    from ``A``'s pattern, so its "B" flips whenever ``A`` does.

    Args:
        attributes: ``(A, B)``, names from ``names``.
        activations, labels: the analysed data, ``(N, K)`` and ``(N, len(names))`` (0/1/NaN).
        names: the attribute names of the label columns (also those of ``heldout``'s labels).
        heldout: ``(activations, labels)`` of held-out data.
        image_judges: ``{attribute: classifier on images}``; only those of ``A`` and ``B`` are used.
        max_judge_phi: the largest ``|phi(A, B)|`` tolerated on the probes' fitting rows.
        seed: for the balanced subset and the probes.

    Returns:
        a :class:`PairJudges`; when ``refused`` is set it has no probes and must not be used.
    """
    if not 0.0 <= float(max_judge_phi) <= 1.0:
        raise ValueError(f"fit_pair_judges: max_judge_phi must be in [0, 1], got {max_judge_phi!r}.")
    names = list(names)
    a_name, b_name = attributes
    for n in attributes:
        if n not in names:
            raise ValueError(f"fit_pair_judges: unknown attribute {n!r}; choose from {names}.")
    a, b = names.index(a_name), names.index(b_name)
    chosen = {n: j for n, j in (image_judges or {}).items() if n in attributes}
    info: dict[str, dict] = {n: {"kind": IMAGE_CLASSIFIER, "fitted_on": "user-supplied", "n": None, "phi": None,
                                 "fit_auroc": None} for n in chosen}
    need = [n for n in attributes if n not in chosen]
    if not need:
        return PairJudges({}, chosen, info)
    if heldout is not None:
        x = _as_numpy(heldout[0])
        y, _ = check_labels(heldout[1], num_samples=x.shape[0], names=names, owner="fit_pair_judges (heldout)")
        rows = np.flatnonzero(~np.isnan(y[:, a]) & ~np.isnan(y[:, b]))
        source = "held-out data"
    else:
        x = _as_numpy(activations)
        y, _ = check_labels(labels, num_samples=x.shape[0], names=names, owner="fit_pair_judges")
        known = ~np.isnan(y[:, a]) & ~np.isnan(y[:, b])
        cells = {(va, vb): np.flatnonzero(known & (y[:, a] == va) & (y[:, b] == vb)) for va in (0, 1) for vb in (0, 1)}
        smallest = min(len(c) for c in cells.values())
        source = "balanced subset of the analysed data"
        if smallest == 0:
            empty = ", ".join(f"{a_name}={va} & {b_name}={vb}" for (va, vb), c in cells.items() if len(c) == 0)
            reason = (f"no independent judge for {', '.join(map(repr, need))}: no held-out set, and the analysed data "
                      f"have no row with {empty}, so no balanced subset exists; a probe fitted on these data would "
                      f"read {b_name!r} from the pattern of {a_name!r} (circular). Give held-out data in which "
                      f"{a_name!r} and {b_name!r} are independent, or image_judges.")
            for n in need:
                info[n] = {"kind": PROBE, "fitted_on": source, "n": 0, "phi": None, "fit_auroc": None}
            logger.warning("shortcut counterfactual %s <-> %s refused: %s", a_name, b_name, reason)
            return PairJudges({}, chosen, info, reason)
        rng = np.random.default_rng(seed)
        rows = np.sort(np.concatenate([rng.choice(c, smallest, replace=False) for c in cells.values()]))
        source = f"balanced subset of the analysed data ({smallest} rows per ({a_name}, {b_name}) cell)"
    stats = pair_statistics(y[rows, a], y[rows, b], a_name, b_name, source)
    phi = stats["phi"]
    for n in need:
        info[n] = {"kind": PROBE, "fitted_on": source, "n": int(len(rows)), "phi": phi, "fit_auroc": None}
    reason = None
    if phi is None:
        reason = (f"no probe for {', '.join(map(repr, need))} can be fitted on the {source}: phi({a_name}, {b_name}) is "
                  f"undefined there ({stats['phi_note']}); give image_judges.")
    elif abs(phi) > max_judge_phi:
        reason = (f"the probe(s) for {', '.join(map(repr, need))} would be fitted on the {source} (n = {len(rows)}), "
                  f"where phi({a_name}, {b_name}) = {phi:.3f} exceeds max_judge_phi = {max_judge_phi:g}: such a probe "
                  f"reads {b_name!r} from the pattern of {a_name!r} (circular). Give held-out data in which they are "
                  "independent, or image_judges.")
    if reason is not None:
        logger.warning("shortcut counterfactual %s <-> %s refused: %s", a_name, b_name, reason)
        return PairJudges({}, chosen, info, reason)
    sub_y = y[rows][:, [names.index(n) for n in need]]
    probes = fit_activation_probes(torch.as_tensor(x[rows]), sub_y, need, seed=seed)
    for j, n in enumerate(need):  # how well the probe tells its attribute apart where it was fitted (optimistic)
        info[n]["fit_auroc"] = _auroc(sub_y[:, j], _as_numpy(probes[n](torch.as_tensor(x[rows]))).reshape(-1))
    return PairJudges(probes, chosen, info)


@torch.no_grad()
def counterfactual_test(
    network: nn.Module,
    inferer,
    images: torch.Tensor,
    edits: Sequence[tuple[int, float]],
    judges: Mapping[str, Judge],
    image_judges: Mapping[str, Judge] | None = None,
    num_inference_steps: int = 50,
    depth: int | None = None,
) -> tuple[dict, dict]:
    """Regenerate ``images`` from their DDIM inversion with each edit ``s_k = target`` and judge what changed.

    The images are inverted once; the unedited regeneration (the same latents with the original ``s``) is
    the reference every edit is compared to, so inversion error cancels out. The judges should be fitted
    where the judged attributes are independent (:func:`fit_pair_judges`); otherwise they are circular.

    Args:
        network, inferer: the trained model.
        images: ``(N, C, *spatial)`` images in [-1, 1].
        edits: ``(prototype k, target value of s_k)`` pairs, each applied alone.
        judges: ``{attribute: judge on activations}`` (e.g. :func:`fit_activation_probes`), applied to ``s`` of
            the unedited and the edited regenerations.
        image_judges: ``{attribute: classifier}`` on images ``(N, C, *spatial) -> P(attribute) (N,)``; they
            replace the activation judges for their attributes.
        num_inference_steps, depth: DDIM grid and partial inversion (see :func:`monai_patronus.interpret.edit_images`).

    Returns:
        ``(scores, images)``. ``scores`` is ``{"num_images", "edits": [{"prototype", "target",
        "activation_before", "activation_after", "efficacy", "efficacy_images", "efficacy_at_least_half",
        "attributes": {name:
        {"flip_rate", "p_before", "p_after", "positive_before", "positive_after", "judge"}}}, ...]}``:

        - ``activation_*``: the mean ``s_k`` re-encoded from the unedited and the edited regeneration;
        - ``efficacy``: the mean over images of ``(s_k after - s_k before) / (target - s_k before)`` (per-image
          values), the share of the intended change that the regeneration shows: 1 the edit took fully, 0
          it did nothing, negative it went the wrong way; images whose ``s_k`` before is within
          ``1e-3 * max(1, |target|)`` of the target ask for no change and are left out (``efficacy_images``
          counts the rest; ``efficacy`` is ``None`` when none is left); ``efficacy_at_least_half``: the share
          of those images whose own share of the intended change is at least 0.5;
        - ``flip_rate``: the fraction of images whose judged attribute (``p >= 0.5``) differs between the
          unedited and the edited regeneration; ``positive_*`` the fraction judged positive before and after;
          ``p_*`` the mean probabilities.

        ``images`` is ``{"unedited": (N, ...), "edited": [(N, ...) per edit]}``.
    """
    s = network.encode(images)
    latents = inferer.invert(images, network, s, num_inference_steps, depth=depth)
    unedited = inferer.reconstruct(latents, network, s, num_inference_steps, depth=depth)
    before_s = network.encode(unedited)
    image_judges = dict(image_judges or {})
    names = list(dict.fromkeys([*judges, *image_judges]))
    before = {n: _as_numpy(image_judges[n](unedited) if n in image_judges else judges[n](before_s)).reshape(-1)
              for n in names}
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
        efficacy = float(np.mean(shares)) if asked.any() else None
        entry = {
            "prototype": prototype,
            "target": target,
            "activation_before": float(k_before.mean()),
            "activation_after": float(k_after.mean()),
            "efficacy": efficacy,
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
    if direction > 0:
        plan = [("plausible maximum", float(values.max()))]
        if extrapolate_to is not None:
            plan.append((f"extrapolated to {float(extrapolate_to):g}", float(extrapolate_to)))
    else:
        plan = [("plausible minimum", float(values.min()))]
        if extrapolate_to is not None:
            plan.append(("suppressed (0)", 0.0))
    return plan


def _image_choice(img_y: np.ndarray, a: int, b: int, names: tuple[str, str], phi: float | None,
                  limit: int) -> tuple[np.ndarray, dict]:
    """Rows lacking ``A``; showing ``B`` when phi(A, B) < 0 (the edit toward ``A`` may remove ``B``), lacking it
    otherwise (it may add ``B``); rows lacking ``A`` whatever ``B`` when fewer than 2 such rows exist."""
    a_name, b_name = names
    b_value = 1 if phi is not None and phi < 0 else 0
    rows = np.flatnonzero((img_y[:, a] == 0) & (img_y[:, b] == b_value))
    fallback = rows.size < 2
    sign = "undefined" if phi is None else ("negative" if phi < 0 else "positive")
    if fallback:
        rows = np.flatnonzero(img_y[:, a] == 0)
        description = (f"without {a_name} (fewer than 2 images without {a_name} and "
                       f"{'with' if b_value else 'without'} {b_name}; {b_name} as it comes)")
    else:
        description = (f"without {a_name} and {'with' if b_value else 'without'} {b_name} (phi {sign}: the edit "
                       f"toward {a_name} {'may remove' if b_value else 'may add'} {b_name})")
    choice = {"a_value": 0, "b_value": None if fallback else b_value, "association": sign, "phi": phi,
              "fallback": bool(fallback), "description": description}
    return rows[:limit], choice


def shortcut_report(
    network: nn.Module,
    inferer,
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
        activations, labels: ``(N, K)`` activations and ``(N, A)`` labels of the analysed data (the model's
            training distribution; e.g. :func:`monai_patronus.evaluation.encode_labelled`).
        names: attribute names (default ``attr0`` ...).
        top_n: top prototypes per attribute.
        heldout: ``(activations, labels)`` of held-out data in which the attributes are independent; besides
            the held-out AUROC, the counterfactual's probes are fitted on it (:func:`fit_pair_judges`).
        images, image_labels: images for the counterfactual, ``(M, C, *spatial)`` or an iterable of batches in
            the order of ``image_labels`` (only the chosen rows are kept, by a streaming pass), and their
            ``(M, A)`` labels (e.g. the held-out data); without them no counterfactual is run.
        num_pairs: pairs to test counterfactually, from the top of the ranking.
        num_counterfactual: at most this many images per test: images lacking ``A`` that lack ``B`` when
            phi(A, B) >= 0 on the analysed data and show ``B`` when phi < 0; when fewer than 2 such images
            exist, images lacking ``A``. The choice is recorded in ``counterfactual["image_choice"]``.
        extrapolate_to: for a prototype that rises with ``A``, the edits are the paper's plausible maximum (the
            largest ``s_k`` of the analysed data) and this value, the end of the paper's extrapolation range
            (``linspace(0, 3, 7)``): a model trained briefly may need more than the plausible maximum to draw a
            pattern into an inverted image. For a prototype that falls with ``A`` they are the plausible minimum
            and ``0`` (suppression). ``None``: the plausible extreme only. The control prototype gets the same
            kind of edit to its own plausible extreme (and ``extrapolate_to`` or ``0``).
        image_judges: optional image classifiers per attribute (see :func:`counterfactual_test`); they win over
            probes for their attributes.
        num_inference_steps, depth: DDIM grid and partial inversion for the edits.
        uncertain, on_constant: label handling (see :func:`monai_patronus.evaluation.attribute_auroc`).
        seed: for the probes and the balanced subset.
        image_key: the images' key when ``images`` yields dict batches.
        max_judge_phi: a pair's counterfactual is skipped (``counterfactual_skipped`` says why, and a warning
            is logged) when its probes would be fitted on rows where ``|phi(A, B)|`` exceeds this.
    """
    if (images is None) != (image_labels is None):
        raise ValueError("shortcut_report: give images and image_labels together (for the counterfactual), or neither.")
    check_int("shortcut_report", "num_pairs", num_pairs, 0)
    check_int("shortcut_report", "num_counterfactual", num_counterfactual, 1)
    if isinstance(max_judge_phi, bool) or not isinstance(max_judge_phi, (int, float)) or not 0 <= max_judge_phi <= 1:
        raise ValueError(f"shortcut_report: max_judge_phi must be a number in [0, 1], got {max_judge_phi!r}.")
    activations = check_activations(activations, owner="shortcut_report", min_samples=2)
    y, names = check_labels(labels, num_samples=activations.shape[0], names=names, owner="shortcut_report",
                            uncertain=uncertain)
    result = attribute_auroc(activations, y, names, on_constant=on_constant)
    keep = [names.index(n) for n in result.names]
    y = y[:, keep]
    held, held_y, h_act = None, None, None
    if heldout is not None:
        h_act, h_labels = heldout
        h_act = check_activations(h_act, owner="shortcut_report (heldout)", min_samples=2)
        held_y, _ = check_labels(h_labels, num_samples=h_act.shape[0], names=names, owner="shortcut_report (heldout)",
                                 uncertain=uncertain)
        held_y = held_y[:, keep]
        held = attribute_auroc(h_act, held_y, result.names, on_constant="error")
    pairs = rank_shortcut_pairs(result, y, top_n, held, held_y)
    act = _as_numpy(activations)
    edits: dict = {}
    if images is not None and num_pairs > 0 and pairs:
        img_y, _ = check_labels(image_labels, num_samples=images.shape[0] if isinstance(images, torch.Tensor) else None,
                                names=names, owner="shortcut_report (image_labels)", uncertain=uncertain)
        img_y = img_y[:, keep]
        for rank, pair in enumerate(pairs[:num_pairs], start=1):
            a, b = (result.names.index(n) for n in pair.attributes)
            judges = fit_pair_judges(pair.attributes, act, y, result.names,
                                     heldout=(h_act, held_y) if heldout is not None else None,
                                     image_judges=image_judges, max_judge_phi=max_judge_phi, seed=seed)
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
                found = gather_images(images, rows.tolist(), "shortcut_report", image_key)
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
            scores, pictures = counterfactual_test(network, inferer, subset, edit_list, judges.probes,
                                                   judges.image_judges, num_inference_steps, depth)
            tests, controls = scores["edits"][: len(plan)], scores["edits"][len(plan):]
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
            edits[rank] = {"unedited": pictures["unedited"], "rows": pictures["edited"][: len(plan)],
                           "labels": [label for label, _ in plan], "control": pictures["edited"][-1]}
    settings = {"num_pairs": num_pairs, "num_counterfactual": num_counterfactual, "extrapolate_to": extrapolate_to,
                "num_inference_steps": num_inference_steps, "depth": depth, "uncertain": uncertain, "seed": seed,
                "max_judge_phi": max_judge_phi}
    return ShortcutReport(pairs, result, held, top_n, settings, edits)


def write_shortcut_report(report: ShortcutReport, output_dir: str | Path, title: str = "Shortcut report") -> dict[str, Path]:
    """Write ``shortcuts.json``, ``shortcuts.md`` (readable page), ``auroc_heatmap.png`` and, per tested pair,
    ``counterfactual_<n>.png`` (rows: unedited regeneration | edited | control edit). Returns the paths."""
    from monai_patronus.interpret.figures import plot_auroc_matrix, plot_image_rows

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "shortcuts.json", "markdown": out / "shortcuts.md", "heatmap": out / "auroc_heatmap.png"}
    data = report.to_dict()
    paths["json"].write_text(json.dumps(data, indent=1))
    plot_auroc_matrix(report.auroc.auroc, report.auroc.names, path=paths["heatmap"],
                      title="AUROC(attribute, prototype) = max(AUROC(y, s_k), AUROC(y, -s_k))")
    lines = [f"# {title}", "", "Attribute pairs that share top prototypes, strongest first. Score: max over shared "
             "prototypes of min(AUROC_A, AUROC_B) on the analysed data (0.5 = chance).", "",
             f"![AUROC heat-map]({paths['heatmap'].name})", ""]
    if not report.pairs:
        lines += ["No attribute pair shares a top prototype: no shortcut evidence.", ""]
    for n, pair in enumerate(report.pairs, start=1):
        a, b = pair.attributes
        co = pair.cooccurrence
        lines += [f"## {n}. {a} <-> {b} (score {pair.score:.3f})", "",
                  f"- Shared top-{report.top_n} prototypes: {', '.join(map(str, pair.shared_prototypes))}; "
                  f"representative prototype {pair.prototype} ({'rises' if pair.direction > 0 else 'falls'} with {a}).",
                  "", "| prototype | AUROC " + a + " | AUROC " + b + (" | held-out " + a + " | held-out " + b if pair.heldout_auroc else "") + " |",
                  "|---|---|---|" + ("---|---|" if pair.heldout_auroc else "")]
        for i, k in enumerate(pair.shared_prototypes):
            row = f"| {k} | {pair.auroc[a][i]:.3f} | {pair.auroc[b][i]:.3f} |"
            if pair.heldout_auroc:
                row += f" {pair.heldout_auroc[a][i]:.3f} | {pair.heldout_auroc[b][i]:.3f} |"
            lines.append(row)
        lines += ["", f"- Co-occurrence in the analysed data (n = {co['rows']}): phi = {_fmt(co['phi'], co)}, "
                  f"P({b} | {a}) = {_fmt(co['p_b1_given_a1'])}, P({b} | not {a}) = {_fmt(co['p_b1_given_a0'])}."]
        if pair.heldout_cooccurrence:
            hc = pair.heldout_cooccurrence
            lines.append(f"- Held-out (n = {hc['rows']}): phi = {_fmt(hc['phi'], hc)}, "
                         f"P({b} | {a}) = {_fmt(hc['p_b1_given_a1'])}, P({b} | not {a}) = {_fmt(hc['p_b1_given_a0'])}.")
        if pair.judges:
            lines.append("- Judges: " + "; ".join(f"{name}: {_judge_text(j)}" for name, j in pair.judges.items()) + ".")
        if pair.counterfactual_skipped:
            lines.append(f"- **Counterfactual not run:** {pair.counterfactual_skipped}")
        cf = pair.counterfactual
        if cf:
            verb = "raised" if cf["direction"] > 0 else "suppressed"
            lines += [f"- Counterfactual on {cf['num_images']} images {cf['image_choice']['description']}: prototype "
                      f"{cf['prototype']} {verb} toward {a}, regenerated from the DDIM inversion and compared with the "
                      f"unedited regeneration. Control: prototype {cf['control_prototype']}, the other prototype least "
                      f"associated with either attribute (AUROC {a} {cf['control_auroc'][a]:.3f}, {b} "
                      f"{cf['control_auroc'][b]:.3f}), {verb} the same way (to its own plausible "
                      f"{'maximum' if cf['direction'] > 0 else 'minimum'}, then the same "
                      f"{'extrapolation' if cf['direction'] > 0 else 'suppression'}). A control whose AUROCs are high "
                      "depicts the same pattern and is expected to flip too. Efficacy: the share of the intended change "
                      "of s_k that the re-encoded regeneration shows (0: the edit did not take).", "",
                      "| edit | s_k before -> after | efficacy | attribute | flip rate | judged positive before -> after "
                      "| control edit | control efficacy | control flip rate |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for e in cf["edits"]:
                c = e["control"]
                for name, r in e["attributes"].items():
                    cr = c["attributes"][name]
                    lines.append(f"| {e['label']} ({e['target']:.3f}) | {e['activation_before']:.3f} -> "
                                 f"{e['activation_after']:.3f} | {_fmt(e['efficacy'])} | {name} | {r['flip_rate']:.2f} "
                                 f"| {r['positive_before']:.2f} -> {r['positive_after']:.2f} | {c['label']} "
                                 f"({c['target']:.3f}) | {_fmt(c['efficacy'])} | {cr['flip_rate']:.2f} |")
            if n in report.edits:
                pics = report.edits[n]
                figure = out / f"counterfactual_{n}.png"
                plot_image_rows(
                    [pics["unedited"][:8], *(r[:8] for r in pics["rows"]), pics["control"][:8]],
                    row_labels=["unedited", *pics["labels"], f"control {cf['control_prototype']}"],
                    title=f"{a} <-> {b}: prototype {cf['prototype']} edited", path=figure,
                )
                paths[f"counterfactual_{n}"] = figure
                lines += ["", f"![counterfactual]({figure.name})"]
        lines.append("")
    paths["markdown"].write_text("\n".join(lines))
    return paths


def _judge_text(judge: dict) -> str:
    if judge["kind"] == IMAGE_CLASSIFIER:
        return "image classifier (user-supplied)"
    return (f"{judge['kind']} fitted on the {judge['fitted_on']} (n = {judge['n']}, phi = {_fmt(judge['phi'])}, "
            f"AUROC on its fitting rows {_fmt(judge['fit_auroc'])})")


def _fmt(value: float | None, stats: dict | None = None) -> str:
    if value is None:
        return f"undefined ({stats['phi_note']})" if stats and stats.get("phi_note") else "undefined"
    return f"{value:.3f}"


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def _as_numpy(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)
