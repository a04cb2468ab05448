"""End-to-end explanation workflows that bundle configs call: each runs the search/edit functions of this package,
draws with :mod:`monai_patronus.interpret.figures` and writes PNG figures plus a JSON summary to ``output_dir``.
Figures and summaries carry only prototype indices, numbers and sample ids (pseudonyms when ``explain`` gets the
run's pseudonymizer, as in the bundles), never image metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from monai_patronus.data.batches import gather_images
from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret.editing import extrapolate, interpolate
from monai_patronus.interpret.emergence import prototype_emergence
from monai_patronus.interpret.figures import plot_emergence_curves, plot_prototype_gallery, plot_strip
from monai_patronus.interpret.prior import ActivationPrior, encode_dataset, fit_activation_prior
from monai_patronus.interpret.prototypes import visualize_prototypes
from monai_patronus.interpret.provenance import crop_patch, find_nearest_patches

__all__ = ["edit_report", "emergence_report", "explain", "load_prior", "sample_report", "train_prior"]


def _out(output_dir: str | Path) -> Path:
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))


def _semantic_gap(network, inferer, images, num_inference_steps, seed: int = 0) -> dict | None:
    """The semantic-reconstruction gap that goes beside an explanation figure (``None`` for a single image)."""
    from monai_patronus.evaluation.conditioning import semantic_reconstruction  # evaluation imports interpret

    if images.shape[0] < 2:
        return None
    return semantic_reconstruction(network, inferer, images, num_inference_steps, seed)


def _gap_text(semantic: dict | None) -> str:
    from monai_patronus.evaluation.conditioning import conditioning_summary  # evaluation imports interpret

    if semantic is None:
        return "s->image gap n/a (one image)"
    return conditioning_summary({"semantic_reconstruction": semantic})


def _efficacy(before: float, after: float, target: float) -> float | None:
    """Share of the intended change ``target - before`` that the regenerated image shows."""
    return None if abs(target - before) < 1e-6 else (after - before) / (target - before)


@torch.no_grad()
def explain(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    output_dir: str | Path,
    prototypes: Sequence[int] | None = None,
    num_inference_steps: int = 50,
    provenance_data: Iterable | None = None,
    top_k: int = 3,
    pseudonymize: Callable[[object], str] | None = None,
) -> Path:
    """The prototype gallery: for each prototype, original | regenerated with box | patch, plus (with
    ``provenance_data``, an iterable of ``{"image", "id"}`` batches) its ``top_k`` nearest real patches.
    Writes ``gallery.png`` and ``explain.json``; returns the gallery path. ``pseudonymize`` (e.g.
    :func:`monai_patronus.tracking.pseudonymizer_for`) maps each image id to what ``explain.json`` shows.
    Each panel states ``s_k`` before and after, the target and the edit efficacy (share of the intended change
    shown; 0 for a model that ignores ``s``); the title the semantic-reconstruction gap and the median efficacy."""
    name = pseudonymize or str
    out = _out(output_dir)
    results = visualize_prototypes(inferer, network, images, prototypes, num_inference_steps=num_inference_steps)
    semantic = _semantic_gap(network, inferer, images, num_inference_steps)
    efficacies = [_efficacy(r.activation_before, r.activation_after, r.target) for r in results]
    known = [e for e in efficacies if e is not None]
    median = float(torch.tensor(known).median()) if known else None
    nearest, sources = {}, {}
    if provenance_data is not None:
        chosen = [r.prototype for r in results]
        nearest = find_nearest_patches(network.prototype_encoder, provenance_data, k=top_k, prototypes=chosen)
        sources = gather_images(provenance_data, {m.image_index for ms in nearest.values() for m in ms})
    panels, summary = [], []
    for r, efficacy in zip(results, efficacies):
        matches = nearest.get(r.prototype, [])
        shown = "n/a" if efficacy is None else f"{efficacy:.0%}"
        panels.append(
            {
                "original": r.original,
                "regenerated": r.regenerated,
                "box": r.box,
                "top_patches": [(crop_patch(sources[m.image_index], m.box), f"d={m.distance:.3g}") for m in matches],
                "title": f"prototype {r.prototype}: s {r.activation_before:.3g} -> {r.activation_after:.3g} "
                f"(target {r.target:.3g}; efficacy {shown})",
            }
        )
        summary.append(
            {
                "prototype": r.prototype,
                "image_index": r.image_index,
                "box": [list(b) for b in r.box],
                "activation_before": r.activation_before,
                "activation_after": r.activation_after,
                "target": r.target,
                "edit_efficacy": efficacy,
                "nearest_real_patches": [
                    {"image_id": name(m.image_id), "box": [list(b) for b in m.box], "distance": m.distance}
                    for m in matches
                ],
            }
        )
    title = f"{_gap_text(semantic)}; median edit efficacy {'n/a' if median is None else f'{median:.0%}'} (chance 0)"
    _write_json(
        out / "explain.json",
        {
            "num_inference_steps": num_inference_steps,
            "prototypes": summary,
            "semantic_reconstruction": semantic,
            "median_edit_efficacy": median,
            "summary": title,
        },
    )
    return plot_prototype_gallery(panels, path=out / "gallery.png", columns=min(4, len(panels)), title=title)


@torch.no_grad()
def emergence_report(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    output_dir: str | Path,
    num_inference_steps: int = 50,
    seed: int = 0,
    num_curves: int = 5,
) -> Path:
    """Generate from fresh noise with the activations of ``images`` and record when each prototype emerges.
    Writes ``emergence.png`` (``num_curves`` prototypes from earliest to latest, titled with the
    semantic-reconstruction gap) and ``emergence.json``."""
    out = _out(output_dir)
    semantic = _semantic_gap(network, inferer, images, num_inference_steps, seed)
    s = network.encode(images)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(images)
    result = prototype_emergence(inferer, network, noise, s, num_inference_steps)
    mean_t = result.emergence_timestep.float().mean(0)
    order = mean_t.argsort(descending=True).tolist()  # earliest in generation first
    picks = sorted({order[round(i * (len(order) - 1) / max(1, num_curves - 1))] for i in range(num_curves)})
    curves = result.activations.mean(1)  # (S, K)
    _write_json(
        out / "emergence.json",
        {
            "timesteps": result.timesteps.tolist(),
            "emergence_timestep_mean": {str(k): float(mean_t[k]) for k in range(len(mean_t))},
            "mean_activation_curves": {str(k): curves[:, k].tolist() for k in range(len(mean_t))},
            "clamped_fraction": None if result.clamped_fraction is None else result.clamped_fraction.tolist(),
            "semantic_reconstruction": semantic,
        },
    )
    return plot_emergence_curves(
        result.timesteps,
        result.activations[:, :, picks],
        [f"prototype {k}" for k in picks],
        mean_t[picks],
        path=out / "emergence.png",
        title=_gap_text(semantic),
    )


@torch.no_grad()
def edit_report(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    output_dir: str | Path,
    prototype: int = 0,
    values: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    interpolation_steps: int = 10,
    num_inference_steps: int = 50,
    depth: int | None = None,
) -> list[Path]:
    """Extrapolation strip of ``prototype`` on the first image, each labelled with the value ``s_k`` was set to
    and the ``s_k`` re-encoded from it, and an interpolation strip between the first two; writes
    ``extrapolation.png``, ``interpolation.png`` and ``edit.json``."""
    out = _out(output_dir)
    sweep = extrapolate(inferer, network, images[:1], prototype, values, num_inference_steps, depth=depth)
    encoded = network.encode(sweep.clamp(-1, 1))[:, prototype].tolist()
    semantic = _semantic_gap(network, inferer, images, num_inference_steps)
    summary = {"prototype": prototype, "values": list(map(float, values)), "reencoded": encoded}
    _write_json(out / "edit.json", {**summary, "semantic_reconstruction": semantic})
    labels = [f"s_{prototype}={v:g} -> {e:.2f}" for v, e in zip(values, encoded)]
    title = f"prototype {prototype}: set -> re-encoded; {_gap_text(semantic)}"
    paths = [plot_strip(sweep, labels, path=out / "extrapolation.png", title=title)]
    if images.shape[0] > 1:
        path = interpolate(inferer, network, images[:1], images[1:2], interpolation_steps, num_inference_steps)
        labels = [f"{w:.2f}" for w in torch.linspace(0, 1, interpolation_steps).tolist()]
        paths.append(plot_strip(path, labels, path=out / "interpolation.png"))
    return paths


def train_prior(network: nn.Module, data: Iterable, path: str | Path, epochs: int = 100, **kwargs) -> ActivationPrior:
    """Encode ``data`` with the (frozen) trained model, fit the activation prior and save it to ``path``."""
    activations = encode_dataset(network, data)
    prior, losses = fit_activation_prior(activations, epochs=epochs, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": prior.config, "state_dict": prior.state_dict(), "losses": losses}, path)
    return prior


def load_prior(path: str | Path) -> ActivationPrior:
    """Load a prior written by :func:`train_prior`, with ``weights_only=True`` (a crafted file cannot run code).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a prior written by :func:`train_prior`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no activation prior at {path}: run the bundle's train_prior config first.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for objects, RuntimeError/EOFError for a corrupt file
        raise ValueError(
            f"{path} is not an activation prior written by train_prior ({type(err).__name__}); it may be corrupt or "
            "hold Python objects, which are never unpickled. Re-run the bundle's train_prior config."
        ) from None
    if not isinstance(saved, dict) or not {"config", "state_dict"} <= set(saved):
        raise ValueError(
            f"{path} is not an activation prior written by train_prior (no 'config'/'state_dict'); re-run train_prior."
        )
    prior = ActivationPrior(**saved["config"])
    prior.load_state_dict(saved["state_dict"])
    return prior.eval()


@torch.no_grad()
def sample_report(
    network: nn.Module,
    inferer: PatronusInferer,
    prior: ActivationPrior,
    image_shape: Sequence[int],
    output_dir: str | Path,
    num_samples: int = 8,
    num_inference_steps: int = 50,
    seed: int = 0,
) -> Path:
    """Unconditional generation: sample ``s`` from the prior, then images; writes ``samples.png``."""
    out = _out(output_dir)
    generator = torch.Generator().manual_seed(seed)
    device = next(network.parameters()).device
    s = prior.sample(num_samples, generator=generator).to(device)
    noise = torch.randn((num_samples, *image_shape), generator=generator).to(device)
    images = inferer.sample(noise, network, s, num_inference_steps)
    return plot_strip(images, path=out / "samples.png")
