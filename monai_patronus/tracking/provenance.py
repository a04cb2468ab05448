"""Prototype provenance for MLflow: where each prototype comes from, under pseudonymous image ids.

:func:`prototype_provenance` writes the JSON table and gallery a training run logs; :func:`model_provenance`
reads them back for a registered model version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.networks.utils import eval_mode
from torch import nn

from monai_patronus.data.batches import gather_images
from monai_patronus.handlers.utils import unwrap_network
from monai_patronus.interpret.figures import plot_image_rows
from monai_patronus.interpret.provenance import find_nearest_patches
from monai_patronus.tracking.privacy import Pseudonymizer

__all__ = ["ModelProvenance", "PROVENANCE_ARTIFACT", "model_provenance", "prototype_provenance"]

#: where a run keeps the final provenance (``provenance/epoch_NNNN/`` for checkpoints)
PROVENANCE_ARTIFACT = "provenance/final"


def prototype_provenance(
    network: nn.Module,
    data: Iterable,
    output_dir: str | Path,
    pseudonymize: Pseudonymizer,
    top_k: int = 5,
    image_key: str = "image",
    id_key: str = "id",
    fingerprint: dict | None = None,
) -> tuple[Path, Path]:
    """Write ``provenance.json`` and ``provenance.png`` for every prototype of ``network`` into ``output_dir``.

    Args:
        network: a trained Patronus network (DDP-wrapped is fine).
        data: batches of the training data in a fixed order (no shuffling): dicts with ``image_key`` and,
            optionally, ``id_key``; images without an id are named by their running index.
        output_dir: folder for the two files (created).
        pseudonymize: maps image ids to the pseudonyms written to the table; ids never reach the files.
        top_k: nearest patches per prototype.
        fingerprint: the training data's fingerprint, copied into the table.

    Returns:
        The paths of the JSON table and of the gallery (one row per prototype: its ``top_k`` source images,
        each with the patch boxed, captioned by pseudonym and distance).
    """
    net = unwrap_network(network)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with eval_mode(net):
        nearest = find_nearest_patches(net.prototype_encoder, data, k=top_k, image_key=image_key, id_key=id_key)
    sources = gather_images(data, {m.image_index for ms in nearest.values() for m in ms}, image_key=image_key)
    table = {
        "top_k": top_k,
        "pseudonym_key_id": pseudonymize.key_id,
        "dataset_fingerprint": fingerprint,
        "prototypes": [
            {
                "prototype": k,
                "patches": [
                    {
                        "rank": m.rank,
                        "image": pseudonymize(m.image_id),
                        "box": [list(b) for b in m.box],
                        "cell": list(m.cell),
                        "distance": m.distance,
                    }
                    for m in matches
                ],
            }
            for k, matches in sorted(nearest.items())
        ],
    }
    table_path = out / "provenance.json"
    table_path.write_text(json.dumps(table, indent=1))
    rows = [torch.stack([sources[m.image_index].float().cpu() for m in ms]) for ms in nearest.values()]
    boxes = [[m.box for m in ms] for ms in nearest.values()]
    captions = [[f"{pseudonymize(m.image_id)[4:12]} d={m.distance:.3g}" for m in ms] for ms in nearest.values()]
    gallery = plot_image_rows(
        rows,
        row_labels=[f"prototype {k}" for k in nearest],
        boxes=boxes,
        captions=captions,
        title=f"nearest training patches per prototype (top {top_k})",
        path=out / "provenance.png",
    )
    return table_path, gallery


@dataclass
class ModelProvenance:
    """A registered model version's record: which run trained it, on which data, and each prototype's patches.

    Attributes:
        name, version: the registered model.
        run_id: the MLflow run that trained and logged it.
        data: the training data's fingerprint (``dataset_fingerprint``): digests and counts.
        table: the provenance table (``provenance.json``).
    """

    name: str
    version: str
    run_id: str
    data: dict
    table: dict = field(repr=False)

    @property
    def num_prototypes(self) -> int:
        return len(self.table["prototypes"])

    def prototype(self, k: int) -> list[dict]:
        """Where prototype ``k`` comes from: its nearest training patches (pseudonymous image, box, distance)."""
        patches = {row["prototype"]: row["patches"] for row in self.table["prototypes"]}
        if k in patches:
            return patches[k]
        raise ValueError(
            f"ModelProvenance.prototype: model {self.name} v{self.version} has no prototype {k}; "
            f"its prototypes are 0..{self.num_prototypes - 1}."
        )


def model_provenance(
    name: str, alias_or_version: str | int = "champion", tracking_uri: str | None = None
) -> ModelProvenance:
    """The provenance of registered model ``name`` at an alias (``"candidate"``, ``"champion"``) or version.

    Raises:
        ValueError: no such model, alias or version, or its run logged no provenance.
    """
    from monai_patronus.tracking.registry import download_run_artifact, model_version

    client, mv = model_version(name, alias_or_version, tracking_uri)
    table = json.loads(download_run_artifact(client, mv.run_id, f"{PROVENANCE_ARTIFACT}/provenance.json").read_text())
    return ModelProvenance(
        name=name, version=str(mv.version), run_id=mv.run_id, data=table.get("dataset_fingerprint") or {}, table=table
    )
