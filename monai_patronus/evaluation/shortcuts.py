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
3. **Counterfactual.** Raise the prototype that represents ``A`` (the shared prototype with the higher
   held-out AUROC for one of the two; its direction from the AUROC's sign) in images showing neither
   attribute, regenerate them from their DDIM inversion, and measure how often the judged ``A`` and ``B``
   change against the unedited regeneration. Judges are linear probes on the activations of the
   regenerated images, fitted on the analysed data, or user-supplied classifiers on the images. A control
   edit raises the other prototype least associated with either attribute (its AUROCs are reported: when
   every prototype depicts the pattern, the control flips too, and says so).

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
    "rank_shortcut_pairs",
    "fit_activation_probes",
    "counterfactual_test",
    "shortcut_report",
    "write_shortcut_report",
]

logger = logging.getLogger("monai_patronus.evaluation")

Judge = Callable[[torch.Tensor], torch.Tensor]


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
        prototype: the representative prototype raised by the counterfactual (the first shared one, or the
            one whose held-out AUROC for ``A`` is highest).
        direction: ``+1`` when ``s_k`` rises with ``A`` (the counterfactual raises it), ``-1`` when it falls.
        cooccurrence: :func:`pair_statistics` of ``A`` and ``B`` on the analysed data.
        heldout_cooccurrence: the same on the held-out data (``None`` without it).
        counterfactual: :func:`counterfactual_test` results (``None`` when not run).
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
    the reference every edit is compared to, so inversion error cancels out.

    Args:
        network, inferer: the trained model.
        images: ``(N, C, *spatial)`` images in [-1, 1] (e.g. showing neither attribute).
        edits: ``(prototype k, target value of s_k)`` pairs, each applied alone.
        judges: ``{attribute: judge on activations}`` (:func:`fit_activation_probes`), applied to ``s`` of the
            unedited and the edited regenerations.
        image_judges: ``{attribute: classifier}`` on images ``(N, C, *spatial) -> P(attribute) (N,)``; they
            replace the activation judges for their attributes.
        num_inference_steps, depth: DDIM grid and partial inversion (see :func:`monai_patronus.interpret.edit_images`).

    Returns:
        ``(scores, images)``. ``scores`` is ``{"num_images", "edits": [{"prototype", "target",
        "activation_before", "activation_after", "attributes": {name: {"flip_rate", "p_before", "p_after",
        "judge"}}}, ...]}``, where ``flip_rate`` is the fraction of images whose judged attribute (``p >= 0.5``)
        differs between the unedited and the edited regeneration, ``p_*`` are mean probabilities and
        ``activation_*`` the mean ``s_k`` re-encoded from the two regenerations. ``images`` is
        ``{"unedited": (N, ...), "edited": [(N, ...) per edit]}``.
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
        target_s = s.clone()
        target_s[:, int(prototype)] = float(target)
        edited = inferer.reconstruct(latents, network, target_s, num_inference_steps, depth=depth)
        after_s = network.encode(edited)
        entry = {
            "prototype": int(prototype),
            "target": float(target),
            "activation_before": float(before_s[:, prototype].mean()),
            "activation_after": float(after_s[:, prototype].mean()),
            "attributes": {},
        }
        for name in names:
            p0 = before[name]
            p1 = _as_numpy(image_judges[name](edited) if name in image_judges else judges[name](after_s)).reshape(-1)
            entry["attributes"][name] = {
                "flip_rate": float(((p0 >= 0.5) != (p1 >= 0.5)).mean()),
                "p_before": float(p0.mean()),
                "p_after": float(p1.mean()),
                "judge": "image classifier" if name in image_judges else "linear probe on s",
            }
        scores["edits"].append(entry)
        edited_images.append(edited)
    return scores, {"unedited": unedited, "edited": edited_images}


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
) -> ShortcutReport:
    """Rank attribute pairs by shared prototypes and test the top ``num_pairs`` counterfactually.

    Args:
        network, inferer: the trained model.
        activations, labels: ``(N, K)`` activations and ``(N, A)`` labels of the analysed data (the model's
            training distribution; e.g. :func:`monai_patronus.evaluation.encode_labelled`).
        names: attribute names (default ``attr0`` ...).
        top_n: top prototypes per attribute.
        heldout: ``(activations, labels)`` of held-out data in which the attributes are independent.
        images, image_labels: images for the counterfactual, ``(M, C, *spatial)`` or an iterable of batches in
            the order of ``image_labels`` (only the chosen rows are kept, by a streaming pass), and their
            ``(M, A)`` labels (e.g. the held-out data); without them no counterfactual is run.
        num_pairs: pairs to test counterfactually, from the top of the ranking.
        num_counterfactual: at most this many images per test: those showing neither attribute of the pair
            (absent in the direction of the edit); when fewer than 2 such images exist, those without ``A``.
        extrapolate_to: besides the paper's plausible maximum (the largest ``s_k`` of the analysed data), also
            edit to this value, the end of the paper's extrapolation range (``linspace(0, 3, 7)``): a model
            trained briefly may need more than the plausible maximum to draw a pattern into an inverted image.
            For a prototype that falls with ``A`` the edits are the plausible minimum and ``0`` (suppression).
            ``None``: the plausible extreme only. The control prototype gets the same kinds of edit.
        image_judges: optional image classifiers per attribute (see :func:`counterfactual_test`).
        num_inference_steps, depth: DDIM grid and partial inversion for the edits.
        uncertain, on_constant: label handling (see :func:`monai_patronus.evaluation.attribute_auroc`).
        seed: for the probes.
        image_key: the images' key when ``images`` yields dict batches.
    """
    if (images is None) != (image_labels is None):
        raise ValueError("shortcut_report: give images and image_labels together (for the counterfactual), or neither.")
    check_int("shortcut_report", "num_pairs", num_pairs, 0)
    check_int("shortcut_report", "num_counterfactual", num_counterfactual, 1)
    activations = check_activations(activations, owner="shortcut_report", min_samples=2)
    y, names = check_labels(labels, num_samples=activations.shape[0], names=names, owner="shortcut_report",
                            uncertain=uncertain)
    result = attribute_auroc(activations, y, names, on_constant=on_constant)
    keep = [names.index(n) for n in result.names]
    y = y[:, keep]
    held, held_y = None, None
    if heldout is not None:
        h_act, h_labels = heldout
        h_act = check_activations(h_act, owner="shortcut_report (heldout)", min_samples=2)
        held_y, _ = check_labels(h_labels, num_samples=h_act.shape[0], names=names, owner="shortcut_report (heldout)",
                                 uncertain=uncertain)
        held_y = held_y[:, keep]
        held = attribute_auroc(h_act, held_y, result.names, on_constant="error")
    pairs = rank_shortcut_pairs(result, y, top_n, held, held_y)
    act = torch.as_tensor(activations)
    edits: dict = {}
    if images is not None and num_pairs > 0 and pairs:
        img_y, _ = check_labels(image_labels, num_samples=images.shape[0] if isinstance(images, torch.Tensor) else None,
                                names=names, owner="shortcut_report (image_labels)", uncertain=uncertain)
        img_y = img_y[:, keep]
        judges = fit_activation_probes(activations, y, result.names, seed=seed)
        for rank, pair in enumerate(pairs[:num_pairs], start=1):
            a, b = (result.names.index(n) for n in pair.attributes)
            absent = 0.0 if pair.direction > 0 else 1.0
            rows = np.flatnonzero((img_y[:, a] == absent) & (img_y[:, b] == absent))
            if rows.size < 2:
                rows = np.flatnonzero(img_y[:, a] == absent)
            if rows.size == 0:
                logger.warning("shortcut_report: no image without %r for the counterfactual; skipped.", pair.attributes[0])
                continue
            rows = rows[:num_counterfactual]
            if isinstance(images, torch.Tensor):
                subset = images[torch.as_tensor(rows)]
            else:
                found = gather_images(images, rows.tolist(), "shortcut_report", image_key)
                subset = torch.stack([found[int(r)] for r in rows])
            subset = subset.to(next(network.parameters()).device)
            pair_judges = {n: judges[n] for n in pair.attributes}
            pair_image_judges = {n: j for n, j in (image_judges or {}).items() if n in pair.attributes}
            k = pair.prototype
            # control: the other prototype least associated with either attribute of the pair
            strength = np.maximum(result.auroc[a], result.auroc[b])
            strength[k] = np.inf
            control = int(np.argmin(strength)) if result.auroc.shape[1] > 1 else k
            labels_ = ["plausible maximum" if pair.direction > 0 else "plausible minimum"]
            targets = [float(act[:, k].max() if pair.direction > 0 else act[:, k].min())]
            control_targets = [float(act[:, control].max())]
            if extrapolate_to is not None:
                labels_.append(f"extrapolated to {float(extrapolate_to):g}" if pair.direction > 0 else "suppressed (0)")
                targets.append(float(extrapolate_to) if pair.direction > 0 else 0.0)
                control_targets.append(float(extrapolate_to))
            edit_list = [(k, t) for t in targets] + [(control, t) for t in control_targets]
            scores, pictures = counterfactual_test(network, inferer, subset, edit_list, pair_judges, pair_image_judges,
                                                   num_inference_steps, depth)
            tests, controls = scores["edits"][: len(targets)], scores["edits"][len(targets):]
            for label, test, ctrl in zip(labels_, tests, controls):
                test["label"] = label
                test["control"] = ctrl
            pair.counterfactual = {
                "prototype": k,
                "control_prototype": control,
                "control_auroc": {n: float(result.auroc[x, control]) for n, x in zip(pair.attributes, (a, b))},
                "num_images": scores["num_images"],
                "image_rows": rows.tolist(),
                "edits": tests,
            }
            edits[rank] = {"unedited": pictures["unedited"], "rows": pictures["edited"][: len(targets)],
                           "labels": labels_, "control": pictures["edited"][-1]}
    settings = {"num_pairs": num_pairs, "num_counterfactual": num_counterfactual, "extrapolate_to": extrapolate_to,
                "num_inference_steps": num_inference_steps, "depth": depth, "uncertain": uncertain, "seed": seed}
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
        cf = pair.counterfactual
        if cf:
            lines += [f"- Counterfactual on {cf['num_images']} images showing neither attribute: prototype {cf['prototype']} "
                      f"edited, regenerated from the DDIM inversion and compared with the unedited regeneration; "
                      f"control: prototype {cf['control_prototype']}, the other prototype least associated with either "
                      f"attribute (AUROC {a} {cf['control_auroc'][a]:.3f}, {b} {cf['control_auroc'][b]:.3f}), same kind "
                      "of edit. A control whose AUROCs are high depicts the same pattern and is expected to flip too.", "",
                      "| edit | s_k before -> after | attribute | judge | flip rate | P before -> after | control flip rate |",
                      "|---|---|---|---|---|---|---|"]
            for e in cf["edits"]:
                for name, r in e["attributes"].items():
                    c = e["control"]["attributes"][name]
                    lines.append(f"| {e['label']} ({e['target']:.3f}) | {e['activation_before']:.3f} -> "
                                 f"{e['activation_after']:.3f} | {name} | {r['judge']} | {r['flip_rate']:.2f} | "
                                 f"{r['p_before']:.2f} -> {r['p_after']:.2f} | {c['flip_rate']:.2f} |")
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


def _fmt(value: float | None, stats: dict | None = None) -> str:
    if value is None:
        return f"undefined ({stats['phi_note']})" if stats and stats.get("phi_note") else "undefined"
    return f"{value:.3f}"


def _as_numpy(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)
