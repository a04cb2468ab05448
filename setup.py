"""Installable package for monai-patronus (Patronus interpretable diffusion on MONAI)."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

extras = {
    # torchvision-style adapters for CelebA, Fashion-MNIST, CIFAR-10, FFHQ
    "natural": ["torchvision>=0.17"],
    # readers used through MONAI transforms (DICOM, NIfTI, MHA/NRRD); nilearn ships the MNI152 demo data
    "medical": [
        "nibabel>=5.0",
        "pydicom>=3.0",
        "pylibjpeg>=2.0",
        "pylibjpeg-libjpeg>=2.1",
        "pylibjpeg-openjpeg>=2.0",
        "SimpleITK>=2.3",
        "nilearn>=0.10",
        "pandas>=1.5",
    ],
    # to open the review notebooks interactively (the tests execute them headless with nbclient)
    "notebooks": ["jupyter", "nbclient>=0.9", "nbformat>=5.9", "ipykernel"],
    "test": ["pytest>=7.4", "ruff>=0.6", "nbclient>=0.9", "nbformat>=5.9", "ipykernel"],
}
# the tests exercise every loader and bundle
extras["test"] += extras["natural"] + extras["medical"]
extras["all"] = sorted({req for reqs in extras.values() for req in reqs})

setup(
    name="monai-patronus",
    version="0.1.0",
    description="Patronus: interpretable diffusion models with prototypes, as a MONAI plugin",
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["monai_patronus", "monai_patronus.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.2",
        "monai>=1.5",
        "pytorch-ignite>=0.4.11",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "numpy>=1.24",
        "pandas>=1.5",
        "pillow>=9.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        # `python -m monai.bundle` needs fire; MONAI's diffusion U-Net attention needs einops
        "fire>=0.5",
        "einops>=0.7",
        # every training bundle tracks its run, provenance and model in MLflow by default
        "mlflow>=3.0",
    ],
    extras_require=extras,
)
