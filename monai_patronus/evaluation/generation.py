"""Generation metrics for Patronus (``docs/method.md`` sections 4 and 7): FID with encoded or prior-sampled
activations (MONAI ``FIDMetric``, Heusel et al. 2017), and PSNR/SSIM of DDIM inversion + reconstruction.

Nothing is downloaded: export a feature network (Inception-v3 pool-3 for the paper's numbers) with
``torch.jit.script(model).save(path)``, then e.g. ``FeatureExtractor(load_feature_extractor(path), channels=3,
size=299)``. FID values are only comparable with the same extractor, input adaptation and sample size.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from monai.metrics import FIDMetric, PSNRMetric, SSIMMetric
from monai.networks.utils import eval_mode
from monai.transforms import Compose, NormalizeIntensity, RepeatChannel, Resize, ScaleIntensityRange
from monai.utils import ensure_tuple_rep, look_up_option
from torch import nn

from monai_patronus.data.batches import iter_batches
from monai_patronus.inferers import PatronusInferer

__all__ = [
    "FeatureExtractor",
    "conditional_fid",
    "extract_features",
    "fid",
    "image_similarity",
    "load_feature_extractor",
    "reconstruction_metrics",
    "unconditional_fid",
]


def _device_of(module: object) -> torch.device:
    """The device of ``module``'s first parameter or buffer; CPU when it has none."""
    tensors = (*module.parameters(), *module.buffers()) if isinstance(module, nn.Module) else ()
    return tensors[0].device if tensors else torch.device("cpu")


def load_feature_extractor(path: str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """Load a TorchScript (``torch.jit.script(model).save(path)``) or ``torch.export.save`` feature extractor onto
    ``device`` (default CPU), in eval mode.

    Raises:
        FileNotFoundError: ``path`` is not a file. ValueError: neither archive kind (e.g. a ``state_dict``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_feature_extractor: no feature extractor file at path {path!r}; export one.")
    device = torch.device("cpu" if device is None else device)
    try:
        return torch.jit.load(path, map_location=device).eval()
    except Exception as jit_error:  # noqa: BLE001 - torch raises several error types for foreign files
        try:
            return torch.export.load(path).module().to(device)
        except Exception:  # noqa: BLE001 - not a torch.export archive either
            raise ValueError(
                f"load_feature_extractor: path {path!r} is not a TorchScript archive ({type(jit_error).__name__}) "
                "nor a torch.export one; export the network with torch.jit.script(model).save(path)."
            ) from jit_error


class FeatureExtractor(nn.Module):
    """Adapt Patronus images ``(N, C, *spatial)`` in ``[-1, 1]`` to a feature network; one ``(N, F)`` vector each.

    Per image, MONAI ``ScaleIntensityRange`` (``[-1, 1]`` to ``input_range``), ``RepeatChannel``, ``Resize`` (with
    anti-aliasing) and ``NormalizeIntensity``; then the network (first item of a tuple output), whose spatial
    output is average-pooled (``pool="avg"``, the FID convention) or flattened. Features are float32, no gradients.

    Args:
        network: a ``torch.nn.Module`` (e.g. from :func:`load_feature_extractor`) or a callable on image tensors.
        input_range: ``(low, high)`` the network expects.
        channels: input channels the network expects, or ``None`` to pass the images' channels.
        size: spatial size (an int for every axis or one per axis), or ``None`` to keep it.
        mean, std: per-channel normalisation (a float or one value per channel), or ``None``.
        pool: ``"avg"`` or ``"flatten"``.
    """

    def __init__(
        self,
        network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        input_range: Sequence[float] = (0.0, 1.0),
        channels: int | None = None,
        size: int | Sequence[int] | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        if not callable(network):
            raise TypeError(
                f"FeatureExtractor: network must be an nn.Module or a callable on image tensors, got "
                f"{type(network).__name__}; load a file with load_feature_extractor(path) first."
            )
        low, high = (float(v) for v in input_range)
        if not low < high:
            raise ValueError(f"FeatureExtractor: input_range must be (low, high) with low < high, got {input_range}.")
        self.network = network
        self.input_range = (low, high)
        self.channels, self.size, self.mean, self.std = channels, size, mean, std
        self.pool = look_up_option(pool, ("avg", "flatten"))

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Set the train/eval flag, on the network too when it has one (``torch.export`` modules raise)."""
        self.training = mode
        if isinstance(self.network, nn.Module):
            with contextlib.suppress(NotImplementedError):
                self.network.train(mode)
        return self

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input for ``images`` ``(N, C, *spatial)`` in ``[-1, 1]``."""
        x = images.as_subclass(torch.Tensor).float()
        c, dims = x.shape[1], x.ndim - 2
        steps = [ScaleIntensityRange(-1.0, 1.0, *self.input_range)]
        if self.channels is not None and c != self.channels:
            if c != 1:
                raise ValueError(
                    f"FeatureExtractor: images have {c} channels but channels={self.channels}; give 1 or {c} channels."
                )
            steps.append(RepeatChannel(self.channels))
            c = self.channels
        if self.size is not None and tuple(x.shape[2:]) != ensure_tuple_rep(self.size, dims):
            mode = {1: "linear", 2: "bilinear"}.get(dims, "trilinear")
            steps.append(Resize(ensure_tuple_rep(self.size, dims), mode=mode, align_corners=False, anti_aliasing=True))
        if self.mean is not None or self.std is not None:
            sub = ensure_tuple_rep(0.0 if self.mean is None else self.mean, c)
            div = ensure_tuple_rep(1.0 if self.std is None else self.std, c)
            steps.append(NormalizeIntensity(subtrahend=sub, divisor=div, channel_wise=True))
        chain = Compose(steps)
        return torch.stack([chain(image).as_subclass(torch.Tensor) for image in x])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` float32 features of ``images`` ``(N, C, *spatial)`` in ``[-1, 1]``."""
        x = self.adapt(images)
        out = self.network(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.as_subclass(torch.Tensor)
        if out.ndim < 2 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"FeatureExtractor: the network returned shape {tuple(out.shape)}, not (N, F) or (N, C, *)"
            )
        if out.ndim > 2:
            out = out.flatten(2).mean(dim=2) if self.pool == "avg" else out.flatten(1)
        return out.float()


Extractor = FeatureExtractor | nn.Module | Callable[[torch.Tensor], torch.Tensor]


def _as_extractor(extractor: Extractor) -> FeatureExtractor:
    return extractor if isinstance(extractor, FeatureExtractor) else FeatureExtractor(extractor)


def _features(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int | None, device=None) -> torch.Tensor:
    """``(N, F)`` float64 CPU features of one batch, in chunks of ``batch_size``."""
    device = _device_of(extractor.network) if device is None else device
    step = batch_size or images.shape[0]
    chunks = [images[i : i + step].to(device=device, dtype=torch.float32) for i in range(0, images.shape[0], step)]
    return torch.cat([extractor(chunk).to(device="cpu", dtype=torch.float64) for chunk in chunks])


def extract_features(
    extractor: Extractor,
    data: Iterable | torch.Tensor | dict,
    image_key: str = "image",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Features of every image in ``data``, streamed without gradients (the extractor's mode is restored).

    Args:
        extractor: a :class:`FeatureExtractor`; a plain module or callable is wrapped with its defaults.
        data: batches as in :func:`monai_patronus.data.batches.iter_batches` (a DataLoader of dicts holding
            ``image_key``, ``(images, ...)`` tuples, or one tensor / dict batch), images in ``[-1, 1]``.
        image_key: the images' key in dict batches.
        batch_size: chunk size within a batch (memory bound); ``None`` keeps the batches.
        device: where to run the extractor (it is not moved; images are); defaults to its parameters' device.

    Returns:
        ``(N, F)`` float64 CPU features, in data order.
    """
    fx = _as_extractor(extractor)
    with eval_mode(fx):
        batches = iter_batches(data, image_key)
        out = [_features(fx, images, batch_size, device) for _, images, _ in batches]
    if not out:
        raise ValueError("extract_features: data yielded no images; give at least one non-empty batch.")
    return torch.cat(out)


def _as_features(name: str, features: torch.Tensor | np.ndarray) -> torch.Tensor:
    features = torch.as_tensor(features).as_subclass(torch.Tensor).detach().to(device="cpu", dtype=torch.float64)
    if features.ndim != 2 or min(features.shape) < 2 or not torch.isfinite(features).all():
        raise ValueError(
            f"fid: {name} must be finite features of shape (N, F) with N >= 2 samples and F >= 2 features, got shape "
            f"{tuple(features.shape)}; pool spatial features first and check the images for NaN/inf."
        )
    return features


def fid(real_features: torch.Tensor | np.ndarray, fake_features: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` of ``(N_r, F)`` real and ``(N_f, F)``
    generated features (``N >= 2``, ``F >= 2``).

    MONAI ``FIDMetric`` in float64 on the CPU; rounding below 0 gives 0. Compare FIDs only at equal sample sizes.
    """
    real, fake = _as_features("real_features", real_features), _as_features("fake_features", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"fid: real_features has F={real.shape[1]} features but fake_features F={fake.shape[1]}.")
    with warnings.catch_warnings():
        # MONAI 1.6 calls scipy.linalg.sqrtm(..., disp=False), deprecated in SciPy 1.16+
        warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated.*", category=DeprecationWarning)
        return max(float(FIDMetric()(fake, real)), 0.0)


def _generator(network: nn.Module, device, seed: int) -> tuple[torch.device, torch.Generator]:
    device = _device_of(network) if device is None else torch.device(device)
    return device, torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def conditional_fid(
    network: nn.Module,
    inferer: PatronusInferer,
    data: Iterable | torch.Tensor | dict,
    extractor: Extractor,
    num_inference_steps: int = 50,
    seed: int = 0,
    image_key: str = "image",
    eta: float = 0.0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """FID of images generated with each real image's own activations ``s(x)`` (the paper's "with encoded s").

    Per real batch: ``inferer.sample(noise, network, network.encode(x), ...)`` clamped to ``[-1, 1]``, noise from one
    generator seeded with ``seed`` (results depend on the batching); then :func:`fid`. The paper uses 1000 steps.

    Args:
        network, inferer: the trained :class:`~monai_patronus.networks.PatronusUNet` and its inferer.
        data: real images in ``[-1, 1]`` (batches as in :func:`extract_features`), at least 2.
        extractor, image_key, batch_size: as in :func:`extract_features`.
        num_inference_steps, eta: the sampler's steps and DDIM stochasticity.
        seed: of the noise generator (on the network's device).
        device: where to generate; defaults to the network's device (networks are not moved).

    Returns:
        the FID.
    """
    fx = _as_extractor(extractor)
    device, generator = _generator(network, device, seed)
    real, fake = [], []
    with eval_mode(network, fx):
        for _, images, _ in iter_batches(data, image_key):
            x = images.to(device=device, dtype=torch.float32)
            noise, s = torch.randn(x.shape, generator=generator, device=device), network.encode(x)
            generated = inferer.sample(noise, network, s, num_inference_steps, eta=eta, generator=generator)
            real.append(_features(fx, images, batch_size))
            fake.append(_features(fx, generated.clamp(-1.0, 1.0), batch_size))
    return fid(torch.cat(real) if real else torch.zeros(0, 0), torch.cat(fake) if fake else torch.zeros(0, 0))


@torch.no_grad()
def unconditional_fid(
    network: nn.Module,
    inferer: PatronusInferer,
    prior: nn.Module,
    extractor: Extractor,
    data: Iterable | torch.Tensor | dict,
    num_samples: int,
    num_inference_steps: int = 50,
    prior_inference_steps: int | None = None,
    seed: int = 0,
    image_key: str = "image",
    generation_batch_size: int | None = None,
    eta: float = 0.0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    real_features: torch.Tensor | None = None,
) -> float:
    """FID of unconditionally generated images: ``s`` from the activation prior, then the image given ``s``.

    ``prior.sample(num_samples, ...)`` (an :class:`~monai_patronus.interpret.prior.ActivationPrior`), then images of
    the data's shape in batches of ``generation_batch_size`` (default: the data's first batch size), then :func:`fid`.

    Args:
        network, inferer, extractor, num_inference_steps, seed, image_key, eta, batch_size, device: as in
            :func:`conditional_fid`.
        data: the real images (also gives the generated images' shape).
        num_samples: images to generate (>= 2; the paper: as many as real images).
        prior_inference_steps: ``num_inference_steps`` of ``prior.sample`` (``None``: DDPM over all its steps).
        real_features: precomputed ``extract_features(extractor, data)``; ``data`` is then read for its first batch.
    """
    prior_k, net_k = getattr(prior, "num_prototypes", None), getattr(network, "num_prototypes", None)
    if None not in (prior_k, net_k) and prior_k != net_k:
        raise ValueError(f"prior models K={prior_k} activations but the network has num_prototypes={net_k}.")
    fx = _as_extractor(extractor)
    device, generator = _generator(network, device, seed)
    first: torch.Tensor | None = None
    real: list[torch.Tensor] = []
    with eval_mode(fx):  # one pass: the first batch gives the shape; features only when not given
        for _, images, _ in iter_batches(data, image_key):
            first = images if first is None else first
            if real_features is not None:
                break
            real.append(_features(fx, images, batch_size))
    if first is None:
        raise ValueError("unconditional_fid: data yielded no images; give the real images.")
    step = generation_batch_size or first.shape[0]
    prior_generator = torch.Generator(device=_device_of(prior)).manual_seed(seed)
    fake = []
    with eval_mode(network, prior, fx):
        activations = prior.sample(num_samples, generator=prior_generator, num_inference_steps=prior_inference_steps)
        for start in range(0, num_samples, step):
            s = activations[start : start + step].to(device=device, dtype=torch.float32)
            noise = torch.randn((s.shape[0], *first.shape[1:]), generator=generator, device=device)
            generated = inferer.sample(noise, network, s, num_inference_steps, eta=eta, generator=generator)
            fake.append(_features(fx, generated.clamp(-1.0, 1.0), batch_size))
    return fid(torch.cat(real) if real_features is None else real_features, torch.cat(fake))


# ---------------------------------------------------------------------------------------------- reconstruction
def _ssim_window(spatial_shape: Sequence[int], win_size: int) -> tuple[int, ...]:
    """Per-axis SSIM window: ``win_size``, shrunk to the largest odd size that fits an axis smaller than it."""
    window = tuple(min(win_size, n if n % 2 == 1 else n - 1) for n in spatial_shape)
    if min(window) < 3:
        raise ValueError(
            f"SSIM needs win_size >= 3 and every spatial size >= 3, got {win_size}, {tuple(spatial_shape)}."
        )
    return window


def _check_range(name: str, images: torch.Tensor, tolerance: float = 1e-3) -> None:
    low, high = float(images.min()), float(images.max())
    if not -1.0 - tolerance <= low <= high <= 1.0 + tolerance:
        raise ValueError(f"{name} must lie in [-1, 1] as for training, got values in [{low:.4g}, {high:.4g}].")


def _similarity(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], win_size: int) -> dict:
    """MONAI ``PSNRMetric(max_val=2)`` and ``SSIMMetric(data_range=2)`` accumulated over ``(prediction, target)``."""
    psnr, ssim, window, count = PSNRMetric(max_val=2.0), None, (), 0
    for prediction, target in pairs:
        if ssim is None:
            window = _ssim_window(target.shape[2:], win_size)
            ssim = SSIMMetric(spatial_dims=target.ndim - 2, data_range=2.0, win_size=window)
        prediction, target = prediction.float(), target.float()
        psnr(y_pred=prediction, y=target)
        ssim(y_pred=prediction, y=target)
        count += target.shape[0]
    if ssim is None:
        raise ValueError("no images were given; give at least one image.")
    scores = {"psnr": float(psnr.aggregate()), "ssim": float(ssim.aggregate())}
    return scores | {"num_images": count, "ssim_win_size": window}


def image_similarity(predictions: torch.Tensor, targets: torch.Tensor, win_size: int = 11) -> dict:
    """Mean PSNR and SSIM of ``predictions`` against ``targets``, both ``(N, C, *spatial)`` in ``[-1, 1]``.

    MONAI ``PSNRMetric(max_val=2.0)`` and ``SSIMMetric(data_range=2.0)``; the SSIM window is ``win_size`` per axis,
    shrunk to the largest odd size that fits a smaller axis (``ssim_win_size``).

    Returns:
        ``{"psnr", "ssim", "num_images", "ssim_win_size"}``.
    """
    _check_range("predictions", predictions)
    _check_range("targets", targets)
    return _similarity([(predictions.as_subclass(torch.Tensor), targets.as_subclass(torch.Tensor))], win_size)


@torch.no_grad()
def reconstruction_metrics(
    network: nn.Module,
    inferer: PatronusInferer,
    data: Iterable | torch.Tensor | dict,
    num_inference_steps: int = 50,
    image_key: str = "image",
    fixed_point_iterations: int | None = None,
    win_size: int = 11,
    device: str | torch.device | None = None,
    return_reconstructions: bool = False,
) -> dict:
    """How well DDIM inversion + reconstruction reproduces real images (``docs/method.md`` section 4).

    Per batch: ``s = network.encode(x)``, ``inferer.reconstruct(inferer.invert(x, network, s), network, s)`` clamped
    to ``[-1, 1]``; PSNR and SSIM as in :func:`image_similarity`. ``return_reconstructions`` adds the
    reconstructions (CPU) as ``"reconstructions"``; other arguments as in :func:`conditional_fid`.

    Returns:
        ``{"psnr", "ssim", "num_images", "ssim_win_size"}`` (plus ``"reconstructions"``).
    """
    device = _device_of(network) if device is None else torch.device(device)
    outputs: list[torch.Tensor] = []

    def pairs():
        for _, images, _ in iter_batches(data, image_key):
            x = images.to(device=device, dtype=torch.float32)
            _check_range("images", x)
            s = network.encode(x)
            latents = inferer.invert(
                x, network, s, num_inference_steps=num_inference_steps, fixed_point_iterations=fixed_point_iterations
            )
            recon = inferer.reconstruct(latents, network, s, num_inference_steps=num_inference_steps).clamp(-1.0, 1.0)
            if return_reconstructions:
                outputs.append(recon.detach().cpu())
            yield recon, x

    with eval_mode(network):
        result = _similarity(pairs(), win_size)
    if return_reconstructions:
        result["reconstructions"] = torch.cat(outputs)
    return result
