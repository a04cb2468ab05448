"""Generation metrics for Patronus (``METHOD.md`` sections 4 and 7): FID with encoded or prior-sampled
activations, and the quality of DDIM inversion + reconstruction.

Everything statistical is MONAI's: the Fréchet distance is :class:`monai.metrics.FIDMetric` (Heusel et al. 2017),
reconstruction quality is :class:`monai.metrics.PSNRMetric` and :class:`monai.metrics.SSIMMetric`. This module
only streams data, generates images and adapts them to a feature extractor.

Feature extractors are pluggable and nothing is downloaded. The paper's numbers use Inception-v3 pool-3
features (2048-D, 299 px RGB inputs in [0, 1] or ImageNet-normalised, depending on the export); for medical
images a RadImageNet (2-D) or MedicalNet (3-D) network is common. Export any of them once, where you have
the weights, with ``torch.jit.script(model).save(path)`` or ``torch.jit.trace(model, example).save(path)``,
then load it with :func:`load_feature_extractor` and wrap it in :class:`FeatureExtractor` to match its input
conventions, e.g. ``FeatureExtractor(load_feature_extractor("inception.pt"), channels=3, size=299)``.
FID values are only comparable when computed with the same extractor, input adaptation and sample size.

Example::

    fx = FeatureExtractor(load_feature_extractor("radimagenet_resnet50.pt"), channels=3, size=224,
                          mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    score = conditional_fid(net, inferer, test_loader, fx, num_inference_steps=50)
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric, PSNRMetric, SSIMMetric
from torch import nn

from monai_patronus.data.batches import iter_batches
from monai_patronus.evaluation.attributes import check_int

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


# ---------------------------------------------------------------------------------------------- checks
def _resolve_device(owner: str, device: object, module: object = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None``: the device of ``module``'s first parameter/buffer, else CPU."""
    if device is None:
        if isinstance(module, nn.Module):
            for tensor in (*module.parameters(), *module.buffers()):
                return tensor.device
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{owner}: device must be a torch device such as 'cpu' or 'cuda', got {device!r}.") from e


def _check_network(owner: str, network: object, needs: Sequence[str] = ("encode",)) -> nn.Module:
    if not isinstance(network, nn.Module):
        raise TypeError(f"{owner}: network must be a PatronusUNet (an nn.Module), got {type(network).__name__}.")
    for attr in needs:
        if not callable(getattr(network, attr, None)):
            raise TypeError(f"{owner}: network must provide {attr}() (a PatronusUNet), got {type(network).__name__}.")
    return network


def _check_inferer(owner: str, inferer: object, methods: Sequence[str]) -> None:
    for method in methods:
        if not callable(getattr(inferer, method, None)):
            raise TypeError(
                f"{owner}: inferer must be a PatronusInferer (with {', '.join(methods)}), got {type(inferer).__name__}."
            )


def _check_seed(owner: str, seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{owner}: seed must be an int >= 0, got {seed!r}.")
    return seed


class _TrainMode:
    """Context manager: put modules in eval mode and restore each one's train/eval flag afterwards."""

    def __init__(self, *modules: object) -> None:
        self.modules = [m for m in modules if isinstance(m, nn.Module)]
        self.flags: list[bool] = []

    def __enter__(self) -> None:
        self.flags = [m.training for m in self.modules]
        for m in self.modules:
            _set_train(m, False)

    def __exit__(self, *exc: object) -> None:
        for m, flag in zip(self.modules, self.flags):
            _set_train(m, flag)


# ---------------------------------------------------------------------------------------------- extractors
def load_feature_extractor(path: str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """Load a feature extractor from a file the user provides; nothing is downloaded.

    Any network exported with ``torch.jit.script(model).save(path)`` or ``torch.jit.trace(model, example).save(path)``
    works: an Inception-v3 truncated at pool-3 (the classic FID features), a RadImageNet or MedicalNet backbone,
    or a network trained on your own data. TorchScript is deprecated in recent PyTorch (``torch.jit`` warns in 2.14), so a
    ``torch.export`` archive (``torch.export.save(torch.export.export(model, (x,), dynamic_shapes=...), path)``,
    with a dynamic batch axis) is accepted too. Wrap the result in :class:`FeatureExtractor` to adapt the
    ``[-1, 1]`` grey images of Patronus to what the network expects (range, channels, size, normalisation).

    Args:
        path: the file written by ``ScriptModule.save`` (or ``torch.export.save``).
        device: where to load the weights (``map_location``); defaults to the CPU.

    Returns:
        the ``torch.jit.ScriptModule`` in eval mode (or the exported program's module, which has no train mode).

    Raises:
        TypeError: when ``path`` is not a string or path.
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when ``path`` is a directory or neither a TorchScript nor a ``torch.export`` archive (e.g. a
            pickled ``state_dict`` from ``torch.save``), or for an invalid ``device``.
    """
    owner = "load_feature_extractor"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner}: path must be a file path (str or os.PathLike), got {type(path).__name__}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{owner}: no feature extractor at path {path!r}; export one with torch.jit.script(model).save(path) "
            "and pass that file (nothing is downloaded)."
        )
    if os.path.isdir(path):
        raise ValueError(
            f"{owner}: path {path!r} is a directory; pass the TorchScript file saved by ScriptModule.save."
        )
    map_location = _resolve_device(owner, device)
    try:
        return torch.jit.load(path, map_location=map_location).eval()
    except Exception as jit_error:  # noqa: BLE001 - torch raises several error types for foreign files
        try:
            return torch.export.load(path).module().to(map_location)
        except Exception:  # noqa: BLE001 - not a torch.export archive either
            message = str(jit_error).splitlines()[0] if str(jit_error) else ""
            raise ValueError(
                f"{owner}: path {path!r} is not a TorchScript archive ({type(jit_error).__name__}: {message}) "
                "nor a torch.export one; "
                "export the network with torch.jit.script(model).save(path) or "
                "torch.jit.trace(model, example).save(path) "
                "(a torch.save'd state_dict or pickled module cannot be loaded here)."
            ) from jit_error


def _set_train(module: object, mode: bool) -> None:
    """``module.train(mode)``, skipping modules without a train mode (``torch.export`` programs raise)."""
    if isinstance(module, nn.Module):
        try:
            module.train(mode)
        except NotImplementedError:
            pass


def _pair(owner: str, name: str, value: object) -> tuple[float, float]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        or not value[0] < value[1]
    ):
        raise ValueError(
            f"{owner}: {name} must be a pair (low, high) of finite floats with low < high, e.g. (0, 1); got {value!r}."
        )
    return float(value[0]), float(value[1])


def _per_channel(owner: str, name: str, value: object, positive: bool) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = (value,) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    ok = isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and len(values) >= 1
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not ok or (positive and not all(v > 0 for v in values)):
        kind = "positive " if positive else ""
        raise ValueError(
            f"{owner}: {name} must be a {kind}float or a sequence of them (one per channel), got {value!r}."
        )
    return tuple(float(v) for v in values)


class FeatureExtractor(nn.Module):
    """Adapt Patronus images to a feature network and return one ``(N, F)`` feature vector per image.

    Images arrive ``(N, C, *spatial)`` in ``[-1, 1]``. In order, the wrapper

    1. maps ``[-1, 1]`` linearly onto ``input_range`` (default ``(0, 1)``; ``(-1, 1)`` leaves them unchanged,
       ``(0, 255)`` gives byte scale);
    2. repeats a single grey channel ``channels`` times when ``channels`` is given (e.g. 3 for RGB networks);
       images that already have ``channels`` channels are left alone;
    3. resizes to ``size`` when given: ``torch.nn.functional.interpolate``, bilinear with anti-aliasing for 2-D,
       trilinear (PyTorch has no anti-aliased 3-D mode) for 3-D;
    4. subtracts ``mean`` and divides by ``std`` per channel when given (e.g. ImageNet statistics);
    5. calls the network; a tuple/list output contributes its first item;
    6. reduces the output to ``(N, F)``: a ``(N, F)`` output is kept; a ``(N, C, *spatial)`` one is
       global-average-pooled over its spatial axes (``pool="avg"``, the usual FID convention) or flattened
       (``pool="flatten"``).

    Features are computed without gradients and returned as float32 on the input's device.

    Args:
        network: a ``torch.nn.Module`` (e.g. from :func:`load_feature_extractor`) or any callable on image tensors.
        input_range: ``(low, high)`` the network expects; ``[-1, 1]`` is mapped onto it.
        channels: number of input channels the network expects, or ``None`` to pass the images' channels.
        size: spatial size to resize to (an int for every axis or one per axis), or ``None``.
        mean, std: per-channel normalisation after steps 1-3 (a float or one value per channel), or ``None``.
        pool: ``"avg"`` or ``"flatten"``, how spatial outputs become vectors.

    Raises:
        TypeError / ValueError: for invalid arguments (at construction) or images that do not fit (when called).
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
        owner = "FeatureExtractor"
        if isinstance(network, FeatureExtractor):
            raise TypeError(f"{owner}: network is already a FeatureExtractor; pass its .network or use it directly.")
        if not callable(network):
            raise TypeError(
                f"{owner}: network must be an nn.Module or a callable on image tensors, got {type(network).__name__}."
            )
        self.network = network
        self.input_range = _pair(owner, "input_range", input_range)
        check_int(owner, "channels", channels, 1, allow_none=True)
        self.channels = channels
        if size is not None:
            sizes = (size,) if isinstance(size, int) else size
            if (
                isinstance(sizes, (str, bytes))
                or not isinstance(sizes, Sequence)
                or len(sizes) == 0
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)
            ):
                raise ValueError(
                    f"{owner}: size must be an int >= 1 or a sequence of them (one per spatial axis), got {size!r}."
                )
            size = tuple(int(s) for s in sizes)
        self.size = size
        self.mean = _per_channel(owner, "mean", mean, positive=False)
        self.std = _per_channel(owner, "std", std, positive=True)
        if pool not in ("avg", "flatten"):
            raise ValueError(f"{owner}: pool must be 'avg' or 'flatten', got {pool!r}.")
        self.pool = pool

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Set the train/eval flag, also on the network when it has one (``torch.export`` modules do not)."""
        self.training = mode
        _set_train(self.network, mode)
        return self

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """Steps 1-4 of the class docstring: the network's input for ``images`` ``(N, C, *spatial)`` in ``[-1, 1]``."""
        owner = "FeatureExtractor"
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{owner}: images must be a torch.Tensor (N, C, *spatial), got {type(images).__name__}.")
        if images.ndim < 3 or not images.dtype.is_floating_point:
            raise ValueError(
                f"{owner}: images must be a float tensor (N, C, *spatial), got {tuple(images.shape)} {images.dtype}."
            )
        x = images.as_subclass(torch.Tensor).float()
        low, high = self.input_range
        if (low, high) != (-1.0, 1.0):
            x = low + (x + 1.0) * ((high - low) / 2.0)
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(
                    f"{owner}: images have {x.shape[1]} channels but channels={self.channels}; only a single grey "
                    "channel is repeated, so give images with 1 or channels channels (or channels=None)."
                )
            x = x.repeat(1, self.channels, *([1] * (x.ndim - 2)))
        if self.size is not None:
            spatial = x.ndim - 2
            if len(self.size) not in (1, spatial):
                raise ValueError(
                    f"{owner}: size={self.size} has {len(self.size)} entries but the images have {spatial} "
                    "spatial axes; "
                    "give an int or one size per axis."
                )
            target = self.size * spatial if len(self.size) == 1 else self.size
            if tuple(x.shape[2:]) != target:
                if spatial == 2:
                    x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
                elif spatial == 3:
                    x = F.interpolate(x, size=target, mode="trilinear", align_corners=False)
                else:
                    x = F.interpolate(x, size=target, mode="linear", align_corners=False)
        if self.mean is not None or self.std is not None:
            shape = (1, -1, *([1] * (x.ndim - 2)))
            for name, values in (("mean", self.mean), ("std", self.std)):
                if values is not None and len(values) not in (1, x.shape[1]):
                    raise ValueError(
                        f"{owner}: {name} has {len(values)} values but the network input has {x.shape[1]} channels; "
                        "give one value or one per channel."
                    )
            if self.mean is not None:
                x = x - torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
            if self.std is not None:
                x = x / torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` float32 features of ``images`` ``(N, C, *spatial)`` in ``[-1, 1]``."""
        owner = "FeatureExtractor"
        x = self.adapt(images)
        out = self.network(x)
        if isinstance(out, (tuple, list)) and len(out) > 0:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"{owner}: the network must return a tensor (N, F) or (N, C, *spatial), got {type(out).__name__}."
            )
        out = out.as_subclass(torch.Tensor)
        if out.ndim < 2 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"{owner}: the network returned shape {tuple(out.shape)} for {x.shape[0]} images; it must return "
                "(N, F) features or (N, C, *spatial) maps."
            )
        if out.ndim > 2:
            out = out.flatten(2).mean(dim=2) if self.pool == "avg" else out.flatten(1)
        return out.float()


def _as_extractor(owner: str, extractor: object) -> FeatureExtractor:
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if isinstance(extractor, (str, os.PathLike)):
        raise TypeError(
            f"{owner}: extractor is a path ({extractor!r}); load it first with load_feature_extractor(path) "
            "(and wrap it in FeatureExtractor to adapt the inputs)."
        )
    if not callable(extractor):
        raise TypeError(
            f"{owner}: extractor must be a FeatureExtractor, an nn.Module or a callable on images, "
            f"got {type(extractor).__name__}."
        )
    return FeatureExtractor(extractor)


def _extractor_device(extractor: FeatureExtractor) -> torch.device:
    return _resolve_device("extract_features", None, extractor.network)


def _features(
    extractor: FeatureExtractor, images: torch.Tensor, batch_size: int | None, device: torch.device
) -> torch.Tensor:
    """``(N, F)`` float64 CPU features of one batch, in chunks of ``batch_size``."""
    step = images.shape[0] if batch_size is None else batch_size
    out = []
    for start in range(0, images.shape[0], step):
        chunk = images[start : start + step].to(device=device, dtype=torch.float32)
        out.append(extractor(chunk).detach().to(device="cpu", dtype=torch.float64))
    return torch.cat(out)


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    data: Iterable | torch.Tensor | dict,
    image_key: str = "image",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Features of every image in ``data``, streamed without gradients.

    Args:
        extractor: a :class:`FeatureExtractor`; a plain ``nn.Module`` or callable is wrapped in
            ``FeatureExtractor(extractor)`` with its defaults (``[-1, 1] -> [0, 1]``, channels and size kept,
            spatial outputs average-pooled).
        data: batches as accepted by :func:`monai_patronus.data.batches.iter_batches` (a DataLoader of dicts
            holding ``image_key``, ``(images, ...)`` tuples, or a single tensor / dict batch), images in ``[-1, 1]``.
        image_key: the images' key in dict batches.
        batch_size: split each batch into chunks of at most this many images (memory bound); ``None`` keeps them.
        device: where to run the extractor; defaults to the device of its parameters (CPU if it has none). The
            extractor is not moved; images are.

    Returns:
        ``(N, F)`` float64 features on the CPU, in data order. The extractor's train/eval mode is restored.

    Raises:
        TypeError / ValueError: for invalid arguments or batches, or when the data holds no images.
    """
    owner = "extract_features"
    fx = _as_extractor(owner, extractor)
    check_int(owner, "batch_size", batch_size, 1, allow_none=True)
    device = _extractor_device(fx) if device is None else _resolve_device(owner, device)
    out: list[torch.Tensor] = []
    with _TrainMode(fx):
        for _, images, _ in iter_batches(data, owner, image_key):
            feats = _features(fx, images, batch_size, device)
            if out and feats.shape[1] != out[0].shape[1]:
                raise ValueError(f"{owner}: a batch gave {feats.shape[1]} features, earlier batches {out[0].shape[1]}.")
            out.append(feats)
    if not out:
        raise ValueError(f"{owner}: data yielded no images; give at least one non-empty batch.")
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- FID
def _check_features(owner: str, name: str, features: object) -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor or numpy array (N, F), got {type(features).__name__}.")
    if features.ndim != 2:
        raise ValueError(
            f"{owner}: {name} must have shape (N, F) (one feature vector per image), got {tuple(features.shape)}; "
            "pool or flatten spatial features first (FeatureExtractor does)."
        )
    if features.is_complex() or features.dtype == torch.bool:
        raise TypeError(f"{owner}: {name} must be real-valued, got dtype {features.dtype}.")
    if features.shape[0] < 2:
        raise ValueError(f"{owner}: {name} needs at least 2 samples (a covariance), got N={features.shape[0]}.")
    if features.shape[1] < 2:
        raise ValueError(
            f"{owner}: {name} needs at least 2 features per sample (MONAI's FIDMetric works on covariance "
            f"matrices), got F={features.shape[1]}; use a feature extractor with a wider output."
        )
    features = features.as_subclass(torch.Tensor).detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(features).all():
        raise ValueError(f"{owner}: {name} holds NaN or inf values; check the generated images and the extractor.")
    return features


def fid(real_features: torch.Tensor | np.ndarray, fake_features: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` between two feature sets.

    Computed by :class:`monai.metrics.FIDMetric`, called as ``FIDMetric()(y_pred=fake, y=real)`` (its
    argument order: generated first, real second; the value is symmetric up to rounding), in float64 on the CPU
    (MONAI takes the matrix square root with ``scipy.linalg.sqrtm``). Sample covariances use ``N - 1``. Values
    below 0 from rounding (identical sets) are returned as 0.

    The estimate is biased upwards for small ``N`` and depends on the extractor: compare FIDs only at equal
    sample sizes and with the same features. With ``N <= F`` the covariances are singular; MONAI then adds
    ``1e-6`` to their diagonals.

    Args:
        real_features: ``(N_r, F)`` features of real images, ``N_r >= 2``.
        fake_features: ``(N_f, F)`` features of generated images, ``N_f >= 2``, same ``F``.

    Returns:
        the FID as a Python float.

    Raises:
        TypeError / ValueError: for non-tensors, wrong shapes, fewer than 2 samples or features, different
            feature dimensions, or non-finite values.
    """
    owner = "fid"
    real = _check_features(owner, "real_features", real_features)
    fake = _check_features(owner, "fake_features", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"{owner}: real_features has F={real.shape[1]} features but fake_features F={fake.shape[1]}; "
            "extract both with the same extractor."
        )
    with warnings.catch_warnings():
        # MONAI 1.6 calls scipy.linalg.sqrtm(..., disp=False), deprecated in SciPy 1.16+
        warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated.*", category=DeprecationWarning)
        value = float(FIDMetric()(fake, real))
    if not math.isfinite(value):
        raise ValueError(
            f"{owner}: the Fréchet distance is not finite ({value}); check the features for degenerate values."
        )
    return max(value, 0.0)


def _generation_setup(
    owner: str, network: nn.Module, device: object, seed: object
) -> tuple[torch.device, torch.Generator]:
    device = _resolve_device(owner, device, network)
    seed = _check_seed(owner, seed)
    return device, torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def conditional_fid(
    network: nn.Module,
    inferer: object,
    data: Iterable | torch.Tensor | dict,
    extractor: FeatureExtractor | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    num_inference_steps: int = 50,
    seed: int = 0,
    image_key: str = "image",
    eta: float = 0.0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """FID of images generated with each real image's own activations ``s(x)`` (the paper's "with encoded s").

    For every real batch: ``s = network.encode(x)``, fresh noise ``x_T ~ N(0, I)`` from one generator seeded with
    ``seed`` (drawn batch after batch, so results depend on the batching), ``inferer.sample(x_T, network, s,
    num_inference_steps, eta=eta)``, generated images clamped to ``[-1, 1]``; then :func:`fid` between the
    features of the real and the generated images. The paper generates with 1000 DDIM steps; fewer steps give a
    somewhat higher FID.

    Args:
        network: the trained :class:`~monai_patronus.networks.PatronusUNet`.
        inferer: a :class:`~monai_patronus.inferers.PatronusInferer` (DDIM scheduler for short schedules).
        data: real images in ``[-1, 1]``, batches as in :func:`extract_features`; at least 2 images.
        extractor: see :func:`extract_features`.
        num_inference_steps: sampling steps.
        seed: seed of the noise generator (on the network's device).
        image_key: the images' key in dict batches.
        eta: DDIM stochasticity (0: deterministic).
        batch_size: feature-extraction chunk size (see :func:`extract_features`).
        device: where to generate; defaults to the network's device. Networks are not moved.

    Returns:
        the FID as a float. Train/eval modes are restored.
    """
    owner = "conditional_fid"
    network = _check_network(owner, network)
    _check_inferer(owner, inferer, ("sample",))
    fx = _as_extractor(owner, extractor)
    check_int(owner, "batch_size", batch_size, 1, allow_none=True)
    device, generator = _generation_setup(owner, network, device, seed)
    fx_device = _extractor_device(fx)
    real, fake = [], []
    with _TrainMode(network, fx):
        for _, images, _ in iter_batches(data, owner, image_key):
            x = images.to(device=device, dtype=torch.float32)
            s = network.encode(x)
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
            generated = inferer.sample(noise, network, s, num_inference_steps, eta=eta, generator=generator)
            real.append(_features(fx, images, batch_size, fx_device))
            fake.append(_features(fx, generated.clamp(-1.0, 1.0), batch_size, fx_device))
    if not real:
        raise ValueError(f"{owner}: data yielded no images; give at least 2 real images.")
    return fid(torch.cat(real), torch.cat(fake))


@torch.no_grad()
def unconditional_fid(
    network: nn.Module,
    inferer: object,
    prior: nn.Module,
    extractor: FeatureExtractor | nn.Module | Callable[[torch.Tensor], torch.Tensor],
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

    ``num_samples`` vectors are drawn with ``prior.sample(num_samples, generator, prior_inference_steps)``
    (:class:`~monai_patronus.interpret.prior.ActivationPrior`; generator seeded with ``seed`` on the prior's
    device), images of the data's shape ``(C, *spatial)`` (taken from its first batch) are generated from seeded
    noise in batches of ``generation_batch_size``, clamped to ``[-1, 1]`` and compared with the real images'
    features by :func:`fid`. The paper draws as many samples as real images (e.g. 10,000 or 50,000).

    Args:
        network, inferer, extractor, num_inference_steps, image_key, eta, batch_size, device: as in
            :func:`conditional_fid`.
        prior: a fitted ``ActivationPrior`` for this network's ``K``.
        data: the real images (also gives the generated images' shape).
        num_samples: images to generate (>= 2).
        prior_inference_steps: ``num_inference_steps`` of ``prior.sample`` (``None``: DDPM over all its steps).
        seed: seeds the prior's and the image noise's generators.
        generation_batch_size: images generated at once; defaults to the size of the data's first batch.
        real_features: precomputed ``extract_features(extractor, data)`` (e.g. shared with
            :func:`conditional_fid` runs) to skip extracting them again; ``data`` is then only read for its
            first batch.

    Returns:
        the FID as a float. Train/eval modes are restored.
    """
    owner = "unconditional_fid"
    network = _check_network(owner, network)
    _check_inferer(owner, inferer, ("sample",))
    if not isinstance(prior, nn.Module) or not callable(getattr(prior, "sample", None)):
        raise TypeError(f"{owner}: prior must be an ActivationPrior (with sample()), got {type(prior).__name__}.")
    prior_k = getattr(prior, "num_prototypes", None)
    net_k = getattr(network, "num_prototypes", None)
    if prior_k is not None and net_k is not None and prior_k != net_k:
        raise ValueError(
            f"{owner}: prior models K={prior_k} activations but the network has num_prototypes={net_k}; "
            "fit the prior on this network's encoded activations."
        )
    fx = _as_extractor(owner, extractor)
    check_int(owner, "num_samples", num_samples, 2)
    check_int(owner, "generation_batch_size", generation_batch_size, 1, allow_none=True)
    check_int(owner, "batch_size", batch_size, 1, allow_none=True)
    device, generator = _generation_setup(owner, network, device, seed)

    fx_device = _extractor_device(fx)
    first_batch: torch.Tensor | None = None
    real: list[torch.Tensor] = []
    with _TrainMode(fx):  # one pass: the first batch gives the shape; features only when not given
        for _, images, _ in iter_batches(data, owner, image_key):
            if first_batch is None:
                first_batch = images
                if real_features is not None:
                    break
            real.append(_features(fx, images, batch_size, fx_device))
    if first_batch is None:
        raise ValueError(f"{owner}: data yielded no images; give the real images.")
    shape = tuple(first_batch.shape[1:])
    gen_batch = first_batch.shape[0] if generation_batch_size is None else generation_batch_size
    real_features = _check_features(owner, "real_features", torch.cat(real) if real_features is None else real_features)

    prior_device = _resolve_device(owner, None, prior)
    prior_generator = torch.Generator(device=prior_device).manual_seed(seed)
    fake = []
    with _TrainMode(network, prior, fx):
        activations = prior.sample(num_samples, generator=prior_generator, num_inference_steps=prior_inference_steps)
        for start in range(0, num_samples, gen_batch):
            s = activations[start : start + gen_batch].to(device=device, dtype=torch.float32)
            noise = torch.randn((s.shape[0], *shape), generator=generator, device=device, dtype=torch.float32)
            generated = inferer.sample(noise, network, s, num_inference_steps, eta=eta, generator=generator)
            fake.append(_features(fx, generated.clamp(-1.0, 1.0), batch_size, fx_device))
    return fid(real_features, torch.cat(fake))


# ---------------------------------------------------------------------------------------------- reconstruction
def _ssim_window(owner: str, spatial_shape: Sequence[int], win_size: int) -> tuple[int, ...]:
    """Per-axis SSIM window: ``win_size``, shrunk to the largest odd size that fits an axis smaller than it."""
    window = []
    for n in spatial_shape:
        fit = n if n % 2 == 1 else n - 1
        if fit < 3:
            raise ValueError(
                f"{owner}: SSIM needs every spatial size >= 3 (window of at least 3), got spatial shape "
                f"{tuple(spatial_shape)}; use larger images."
            )
        window.append(min(win_size, fit))
    return tuple(window)


def _check_image_range(owner: str, name: str, images: torch.Tensor, tolerance: float = 1e-3) -> None:
    low, high = float(images.min()), float(images.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{owner}: {name} hold NaN or inf values.")
    if low < -1.0 - tolerance or high > 1.0 + tolerance:
        raise ValueError(
            f"{owner}: {name} must lie in [-1, 1] (PSNR/SSIM use data_range=2), got values in [{low:.4g}, {high:.4g}]; "
            "scale the images to [-1, 1] as for training."
        )


class _SimilarityAccumulator:
    """MONAI ``PSNRMetric(max_val=2)`` and ``SSIMMetric(data_range=2)`` accumulated over batches."""

    def __init__(self, owner: str, win_size: int) -> None:
        check_int(owner, "win_size", win_size, 3)
        self.owner = owner
        self.win_size = win_size
        self.psnr = PSNRMetric(max_val=2.0, reduction="mean")
        self.ssim: SSIMMetric | None = None
        self.window: tuple[int, ...] = ()
        self.count = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        owner = self.owner
        if prediction.shape != target.shape:
            raise ValueError(
                f"{owner}: reconstructions {tuple(prediction.shape)} and images {tuple(target.shape)} differ in shape."
            )
        spatial_dims = target.ndim - 2
        if spatial_dims not in (2, 3):
            raise ValueError(
                f"{owner}: images must be 2-D (N, C, H, W) or 3-D (N, C, H, W, D), got {tuple(target.shape)}."
            )
        window = _ssim_window(owner, target.shape[2:], self.win_size)
        if self.ssim is None:
            self.window = window
            self.ssim = SSIMMetric(spatial_dims=spatial_dims, data_range=2.0, win_size=window, reduction="mean")
        elif window != self.window:
            raise ValueError(f"{owner}: images change spatial shape between batches; SSIM needs one window for all.")
        prediction, target = prediction.float(), target.float()
        self.psnr(y_pred=prediction, y=target)
        self.ssim(y_pred=prediction, y=target)
        self.count += target.shape[0]

    def result(self) -> dict:
        if self.ssim is None:
            raise ValueError(f"{self.owner}: no images were given; give at least one image.")
        return {
            "psnr": float(self.psnr.aggregate()),
            "ssim": float(self.ssim.aggregate()),
            "num_images": self.count,
            "ssim_win_size": self.window,
        }


def image_similarity(predictions: torch.Tensor, targets: torch.Tensor, win_size: int = 11) -> dict:
    """Mean PSNR and SSIM of ``predictions`` against ``targets``, both ``(N, C, *spatial)`` in ``[-1, 1]``.

    MONAI ``PSNRMetric(max_val=2.0)`` and ``SSIMMetric(spatial_dims, data_range=2.0, win_size=...)`` (Gaussian
    window, sigma 1.5), averaged over images (SSIM also over channels and window positions). MONAI's SSIM uses
    valid convolutions, so every spatial size must be at least the window: the window is ``win_size`` per axis,
    shrunk to the largest odd size that fits a smaller axis (e.g. 7 for 8-px images; reported as
    ``ssim_win_size``); axes below 3 px are rejected. Identical images give SSIM 1 and PSNR ``inf``.

    Args:
        predictions: e.g. reconstructions (clamp them to ``[-1, 1]`` first).
        targets: the reference images.
        win_size: SSIM window (>= 3; 11 is the standard).

    Returns:
        ``{"psnr", "ssim", "num_images", "ssim_win_size"}``.
    """
    owner = "image_similarity"
    for name, x in (("predictions", predictions), ("targets", targets)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{owner}: {name} must be a torch.Tensor (N, C, *spatial), got {type(x).__name__}.")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{owner}: {name} must be floating point, got {x.dtype}.")
        _check_image_range(owner, name, x)
    acc = _SimilarityAccumulator(owner, win_size)
    acc.update(predictions.as_subclass(torch.Tensor), targets.as_subclass(torch.Tensor))
    return acc.result()


@torch.no_grad()
def reconstruction_metrics(
    network: nn.Module,
    inferer: object,
    data: Iterable | torch.Tensor | dict,
    num_inference_steps: int = 50,
    image_key: str = "image",
    fixed_point_iterations: int | None = None,
    win_size: int = 11,
    device: str | torch.device | None = None,
    return_reconstructions: bool = False,
) -> dict:
    """How well DDIM inversion + reconstruction reproduces real images (``METHOD.md`` section 4).

    For every batch ``x`` (in ``[-1, 1]``): ``s = network.encode(x)``, ``x_T = inferer.invert(x, network, s,
    num_inference_steps)``, ``x̂ = inferer.reconstruct(x_T, network, s, num_inference_steps)`` clamped to
    ``[-1, 1]``; then PSNR (``max_val = 2``) and SSIM (``data_range = 2``) from MONAI, averaged over all images
    (see :func:`image_similarity` for the SSIM window on small images). Works for 2-D and 3-D images.

    Args:
        network: the trained ``PatronusUNet``.
        inferer: a ``PatronusInferer`` with a ``DDIMScheduler(clip_sample=False)``.
        data: batches as in :func:`extract_features`.
        num_inference_steps: the DDIM grid used both ways.
        image_key: the images' key in dict batches.
        fixed_point_iterations: passed to ``inferer.invert`` (``None``: the inferer's default).
        win_size: SSIM window (>= 3).
        device: where to run; defaults to the network's device.
        return_reconstructions: also return the clamped reconstructions (CPU) under ``"reconstructions"``.

    Returns:
        ``{"psnr": float, "ssim": float, "num_images": int, "ssim_win_size": tuple[int, ...]}`` (plus
        ``"reconstructions"``). Train/eval modes are restored.

    Raises:
        ValueError: for images outside ``[-1, 1]`` (tolerance 1e-3), spatial sizes below 3, or no images.
    """
    owner = "reconstruction_metrics"
    network = _check_network(owner, network)
    _check_inferer(owner, inferer, ("invert", "reconstruct"))
    if not isinstance(return_reconstructions, bool):
        raise TypeError(f"{owner}: return_reconstructions must be a bool, got {return_reconstructions!r}.")
    device = _resolve_device(owner, device, network)
    acc = _SimilarityAccumulator(owner, win_size)
    net_dims = getattr(network, "spatial_dims", None)
    outputs: list[torch.Tensor] = []
    with _TrainMode(network):
        for _, images, _ in iter_batches(data, owner, image_key):
            if net_dims is not None and images.ndim - 2 != net_dims:
                raise ValueError(
                    f"{owner}: the network is {net_dims}-D but a batch has shape {tuple(images.shape)}; give "
                    f"(N, C, *{net_dims} spatial axes) images."
                )
            x = images.to(device=device, dtype=torch.float32)
            _check_image_range(owner, "images", x)
            s = network.encode(x)
            latents = inferer.invert(
                x, network, s, num_inference_steps=num_inference_steps, fixed_point_iterations=fixed_point_iterations
            )
            recon = inferer.reconstruct(latents, network, s, num_inference_steps=num_inference_steps).clamp(-1.0, 1.0)
            acc.update(recon, x)
            if return_reconstructions:
                outputs.append(recon.detach().cpu())
    result = acc.result()
    if return_reconstructions:
        result["reconstructions"] = torch.cat(outputs)
    return result
