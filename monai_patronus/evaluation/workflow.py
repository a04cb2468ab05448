"""``evaluate``: every diagnosis and quality score of a trained Patronus model, written to one folder
(``evaluation.json``, ``evaluation.md`` and the shortcut report); used by the bundles' ``evaluate.json``.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch import nn

from monai_patronus.data.batches import iter_batches
from monai_patronus.evaluation.attributes import attribute_auroc, encode_labelled
from monai_patronus.evaluation.conditioning import conditioning_metrics
from monai_patronus.evaluation.generation import (
    conditional_fid,
    load_feature_extractor,
    reconstruction_metrics,
    unconditional_fid,
)
from monai_patronus.evaluation.quality import linear_probe_auroc, tad
from monai_patronus.evaluation.shortcuts import shortcut_report, write_shortcut_report
from monai_patronus.evaluation.stability import seed_stability
from monai_patronus.handlers.checkpoint import load_network_weights
from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret.workflows import load_prior
from monai_patronus.utils import json_safe

__all__ = ["evaluate", "label_names"]


def label_names(dataset: object) -> tuple[list[str] | None, list[str] | None]:
    """``(attribute names, class names)`` a dataset declares: ``attribute_names`` (e.g. CelebA's 40, multi-label)
    or ``classes`` (class-index labels, e.g. CIFAR-10), looked up on the dataset and on a wrapped
    ``.dataset``; ``(None, None)`` when it declares neither."""
    owners = (dataset, getattr(dataset, "dataset", None))
    names = next((n for obj in owners if (n := getattr(obj, "attribute_names", None))), None)
    if names:
        return list(names), None
    classes = next((c for obj in owners if (c := getattr(obj, "classes", None))), None)
    return (None, [str(c) for c in classes]) if classes else (None, None)


def evaluate(
    network: nn.Module,
    inferer: PatronusInferer,
    data: Iterable,
    output_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    heldout_data: Iterable | None = None,
    label_key: str = "label",
    image_key: str = "image",
    uncertain: str = "error",
    on_constant: str = "skip",
    top_n: int = 3,
    num_pairs: int = 3,
    num_counterfactual: int = 16,
    counterfactual_depth: int | None = None,
    extrapolate_to: float | None = 3.0,
    image_judges: Mapping | None = None,
    max_judge_phi: float = 0.2,
    folds: int = 5,
    max_samples: int = 10000,
    num_inference_steps: int = 50,
    num_conditioning_images: int = 16,
    num_reconstruction_batches: int | None = 1,
    feature_extractor: str | nn.Module | None = None,
    num_fid_batches: int | None = None,
    prior: nn.Module | str | Path | None = None,
    num_fid_samples: int = 1000,
    compare_network: nn.Module | str | Path | None = None,
    seed: int = 0,
    title: str = "Patronus evaluation",
) -> dict:
    """Encode the labelled data, score prototype quality, find shortcuts and write the report.

    Args:
        network, inferer: the trained model (eval mode is set here).
        data: the analysed labelled data (the model's training distribution): dict batches with ``image_key`` and
            ``label_key``, e.g. a ``DataLoader`` without shuffling.
        output_dir: where the files go (created).
        names, classes: attribute names of ``(B, A)`` labels, or class names of class-index labels.
        heldout_data: optional held-out labelled data in which the attributes are independent (the counterfactual's
            images and probes).
        label_key, image_key: keys of the batches.
        uncertain, on_constant: label handling (see :func:`monai_patronus.evaluation.check_labels`,
            :func:`monai_patronus.evaluation.attribute_auroc`); constant attributes are skipped by default.
        top_n, num_pairs, num_counterfactual, counterfactual_depth, extrapolate_to, image_judges, max_judge_phi:
            the shortcut report (:func:`monai_patronus.evaluation.shortcut_report`).
        folds, max_samples: linear-probe AUROC and TAD (docs/method.md section 6: 5 folds, first 10,000 samples).
        num_inference_steps: DDIM steps for edits, reconstructions and generation.
        num_conditioning_images: images of ``heldout_data`` (else ``data``) for :func:`conditioning_metrics`; 0 skips.
        num_reconstruction_batches: batches of ``data`` for reconstruction PSNR/SSIM (``None``: all; 0: skip).
        feature_extractor: a TorchScript path or a module for FID (none: no FID); nothing is downloaded.
        num_fid_batches: batches of ``data`` for FID (``None``: all).
        prior: an ``ActivationPrior`` or the path ``train_prior`` wrote, for unconditional FID (``num_fid_samples``).
        compare_network: a second model (another seed) for seed stability, or its checkpoint file or folder.
        seed: for probes, generation noise and the counterfactual.
        title: the report's heading.

    Returns:
        the content of ``evaluation.json`` (also written), with ``"files"`` listing what was written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    network.eval()
    prior = load_prior(prior) if isinstance(prior, (str, Path)) else prior
    if isinstance(compare_network, (str, Path)):
        checkpoint, compare_network = compare_network, copy.deepcopy(network)
        load_network_weights(compare_network, checkpoint)
        compare_network.eval()
    timings: dict[str, float] = {}
    timed = partial(_timed, timings)
    settings = dict(top_n=top_n, num_pairs=num_pairs, num_counterfactual=num_counterfactual)
    settings |= dict(extrapolate_to=extrapolate_to, max_judge_phi=max_judge_phi, folds=folds, max_samples=max_samples)
    settings |= dict(num_inference_steps=num_inference_steps, uncertain=uncertain, on_constant=on_constant, seed=seed)
    result: dict = {"settings": settings}
    labelled = {"names": names, "uncertain": uncertain, "classes": classes}
    encode = partial(encode_labelled, network, label_key=label_key, image_key=image_key, **labelled)
    with timed("encode"):
        analysed = encode(data)
    result["num_images"] = len(analysed)
    result["images_per_second"] = len(analysed) / max(timings["encode"], 1e-9)
    held = None
    if heldout_data is not None:
        with timed("encode_heldout"):
            held = encode(heldout_data)
        result["num_heldout_images"] = len(held)

    if num_conditioning_images:
        with timed("conditioning"):
            source = heldout_data if held is not None and len(held) >= 2 else data
            images = _first_images(source, num_conditioning_images, image_key)
            if len(images) >= 2:  # each image is compared with another image's s
                device = next(network.parameters()).device
                result["conditioning"] = conditioning_metrics(
                    network, inferer, images.to(device), num_inference_steps, reference=analysed.activations, seed=seed
                )
                result["conditioning"]["images"] = "held-out data" if source is heldout_data else "analysed data"

    with timed("quality"):
        s, y, label_names_ = analysed.activations, analysed.labels, analysed.names
        auroc = attribute_auroc(s, y, label_names_, on_constant=on_constant)
        result["attribute_auroc"] = auroc.to_dict()
        result["top_prototypes"] = {n: auroc.top(n, top_n) for n in auroc.names}
        result["linear_probe_auroc"] = linear_probe_auroc(
            s, y, label_names_, folds=folds, max_samples=max_samples, seed=seed, on_constant=on_constant
        ).to_dict()
        result["tad"] = tad(s, y, label_names_, max_samples=max_samples, on_constant=on_constant).to_dict()

    with timed("shortcut_report"):
        kept = [label_names_.index(n) for n in auroc.names]
        heldout_pair = None if held is None else (held.activations, held.labels[:, kept])
        cf_data, cf_labels = (heldout_data, held.labels) if held is not None else (data, y)
        report = shortcut_report(
            network,
            inferer,
            s,
            y[:, kept],
            list(auroc.names),
            top_n=top_n,
            heldout=heldout_pair,
            images=cf_data,
            image_labels=cf_labels[:, kept],
            num_pairs=num_pairs,
            num_counterfactual=num_counterfactual,
            extrapolate_to=extrapolate_to,
            image_judges=image_judges,
            max_judge_phi=max_judge_phi,
            num_inference_steps=num_inference_steps,
            depth=counterfactual_depth,
            uncertain=uncertain,
            on_constant="error",
            seed=seed,
            image_key=image_key,
        )
        paths = write_shortcut_report(report, out, title=f"{title}: shortcut report")
        result["shortcuts"] = report.to_dict()["pairs"]

    if num_reconstruction_batches != 0:
        with timed("reconstruction"):
            result["reconstruction"] = reconstruction_metrics(
                network, inferer, _First(data, num_reconstruction_batches), num_inference_steps, image_key=image_key
            )
    if feature_extractor is not None:
        with timed("fid"):
            if isinstance(feature_extractor, (str, Path)):
                feature_extractor = load_feature_extractor(feature_extractor)
            fid_data, kw = _First(data, num_fid_batches), {"seed": seed, "image_key": image_key}
            fid = conditional_fid(network, inferer, fid_data, feature_extractor, num_inference_steps, **kw)
            result["fid"] = {"conditional": fid}
            if prior is not None:
                result["fid"]["unconditional"] = unconditional_fid(
                    network, inferer, prior, feature_extractor, fid_data, num_fid_samples, num_inference_steps, **kw
                )
    if compare_network is not None:
        with timed("seed_stability"):
            result["seed_stability"] = seed_stability(
                network, compare_network, data, image_key=image_key, baseline_seed=seed
            ).to_dict()

    result["timings_s"] = timings
    result["files"] = {k: str(v) for k, v in paths.items()}
    result = json_safe(result)
    (out / "evaluation.json").write_text(json.dumps(result, indent=1))
    (out / "evaluation.md").write_text(_markdown(result, title, top_n))
    result["files"]["evaluation_json"] = str(out / "evaluation.json")
    result["files"]["evaluation_md"] = str(out / "evaluation.md")
    return result


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def _first_images(data: Iterable, count: int, image_key: str) -> torch.Tensor:
    found = []
    for _, images, _ in iter_batches(data, image_key):
        found.append(images)
        if sum(len(x) for x in found) >= count:
            break
    return torch.cat(found)[:count].float()


class _First:
    """The first ``count`` batches of ``data`` (all when ``None``), re-iterable."""

    def __init__(self, data: Iterable, count: int | None) -> None:
        self.data, self.count = data, count

    def __iter__(self) -> Iterator:
        return itertools.islice(self.data, self.count)


def _markdown(result: dict, title: str, top_n: int) -> str:
    lines = [
        f"# {title}",
        "",
        f"{result['num_images']} images analysed"
        + (f", {result['num_heldout_images']} held out" if "num_heldout_images" in result else "")
        + f"; encoding at {result['images_per_second']:.1f} images/s.",
        "",
    ]
    if "conditioning" in result:
        c = result["conditioning"]
        sem, gain = c["semantic_reconstruction"], c["conditioning_gain"]
        edit, sanity = c["edit_efficacy"]["invert"], c["sample_sanity"]
        lines += [
            "## Does generation use the prototype vector?",
            "",
            f"On {sem['num_images']} images of the {c['images']}. Every explanation below is only as good as "
            "these numbers: at chance, the model ignores its prototypes and its edits and counterfactuals show "
            "nothing.",
            "",
            "| metric | value | chance |",
            "|---|---|---|",
            f"| samples given own s vs another image's s: PSNR to the image (dB) | {sem['psnr']['own']:.2f} vs "
            f"{sem['psnr']['other']:.2f} (gap {sem['psnr']['gap']:+.2f}) | gap 0 |",
            f"| same, SSIM | {sem['ssim']['own']:.3f} vs {sem['ssim']['other']:.3f} "
            f"(gap {sem['ssim']['gap']:+.3f}) | gap 0 |",
            f"| own s closer (share of images) | {sem['win_rate']:.2f} | 0.50 |",
            f"| edit efficacy, raise / suppress (median share of the intended change of s_k) | "
            f"{_num(edit['raise']['median'])} / {_num(edit['suppress']['median'])} | 0 |",
            "| pixel change inside prototype k's box, relative to its area | "
            f"{_num(edit['in_box_ratio']['median'])} | 1 |",
            "| conditioning gain (denoising loss removed by the right s), by noise band | "
            + ", ".join(f"{g:.1%}" for g in gain["gain"])
            + f" (mean {gain['mean_gain']:.1%}) | 0 |",
            f"| sample pixels beyond ±0.98 | {sanity['samples']['saturated']:.1%} (data "
            f"{sanity['data']['saturated']:.1%}) | |",
            "",
        ]
    probe, t = result["linear_probe_auroc"], result["tad"]
    lines += [
        "## Prototype quality (InfoDiffusion protocol)",
        "",
        f"- Linear-probe AUROC (mean over attributes, {probe.get('folds', '?')}-fold): {_num(probe.get('mean'))}",
        f"- TAD: {_num(t.get('tad'))}; attributes captured: {len(t.get('captured', []))} "
        f"({', '.join(t.get('captured', [])) or 'none'})",
        "",
        f"| attribute | top-{top_n} prototypes (AUROC) | linear probe AUROC |",
        "|---|---|---|",
    ]
    probe_auroc = dict(zip(probe.get("names", []), probe.get("auroc", [])))
    for name, top in result["top_prototypes"].items():
        tops = ", ".join(f"{k} ({a:.2f})" for k, a in top)
        lines.append(f"| {name} | {tops} | {_num(probe_auroc.get(name))} |")
    skipped = result["attribute_auroc"].get("skipped") or {}
    if skipped:
        lines += ["", "Skipped attributes: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    lines += ["", "## Shortcuts", ""]
    if result["shortcuts"]:
        for i, pair in enumerate(result["shortcuts"], start=1):
            a, b = pair["attributes"]
            cf = pair.get("counterfactual")
            effect = ""
            if cf:
                e, c = cf["edits"][-1], cf["edits"][-1]["control"]
                judges = ", ".join(
                    f"{n}: {j['kind']} ({j['fitted_on']}, AUROC {_num(j['fit_auroc'], '.2f', 'undefined')})"
                    for n, j in pair["judges"].items()
                )
                effect = (
                    f"; prototype {cf['prototype']} {e['label']} (efficacy {_num(e['efficacy'], '.2f', 'undefined')}) "
                    f"on images {cf['image_choice']['description']}: flips {a} in "
                    f"{e['attributes'][a]['flip_rate']:.0%} and {b} in {e['attributes'][b]['flip_rate']:.0%}; "
                    f"control prototype {cf['control_prototype']} "
                    f"{c['label']} (efficacy {_num(c['efficacy'], '.2f', 'undefined')}): "
                    f"{c['attributes'][a]['flip_rate']:.0%} and {c['attributes'][b]['flip_rate']:.0%}; judges: {judges}"
                )
            elif pair.get("counterfactual_skipped"):
                effect = f"; counterfactual not run: {pair['counterfactual_skipped']}"
            lines.append(
                f"{i}. **{a} <-> {b}**: score {pair['score']:.3f}, shared prototypes "
                f"{pair['shared_prototypes']}{effect}."
            )
        lines += ["", "Full evidence: [shortcuts.md](shortcuts.md)."]
    else:
        lines.append("No attribute pair shares a top prototype.")
    if "reconstruction" in result:
        r = result["reconstruction"]
        lines += [
            "",
            "## Generation",
            "",
            f"- Inversion error ({r['num_images']} images, DDIM invert + reconstruct, "
            "an untrained zero-initialised network scores > 100 dB, so not a measure of learning): "
            f"PSNR {_num(r['psnr'])} dB, SSIM {_num(r['ssim'])}",
        ]
    if "fid" in result:
        lines += ["- FID: " + ", ".join(f"{k} {_num(v)}" for k, v in result["fid"].items())]
    if "seed_stability" in result:
        st = result["seed_stability"]
        line = f"- Mean matched prototype correlation: {_num(st.get('mean_correlation'))}"
        if st.get("baseline_mean_correlation") is not None:
            spread = st.get("baseline_std_correlation")
            line += (
                f" (chance baseline {_num(st['baseline_mean_correlation'])}"
                + (f" ± {_num(spread)}" if spread is not None else "")
                + f" over {len(st.get('baseline_correlations', []))} pairs of freshly initialised models; above "
                f"baseline {_num(st.get('above_baseline'))}: within about two spreads is chance)"
            )
        lines += ["", "## Seed stability", "", line]
    lines += ["", "## Wall time (s)", "", ", ".join(f"{k} {v:.1f}" for k, v in result["timings_s"].items()), ""]
    return "\n".join(lines)


def _num(value: object, spec: str = ".3f", missing: str = "n/a") -> str:
    return missing if value is None else format(float(value), spec)
