"""Ship a trained demo model: weights file, measured numbers and model card.

    python benchmarks/ship_demo_model.py --checkpoints PATH --command "..." --train-seconds S [--threads N]

Takes the network from the demo bundle's checkpoint (``PATH``: a folder or a ``checkpoint_epoch=N.pt``),
writes ``bundles/patronus_demo/models/model.pt`` (``{"network": state_dict}``, loadable with
``torch.load(weights_only=True)``, which ``load_network_weights`` uses), measures it on the bundle's held-out
slices (never trained on) with the conditioning metrics (bundle settings: its inferer, guidance and DDIM steps)
and the masking-faithfulness test, and writes ``models/model_card.json`` and ``docs/model_card.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

import torch
from _demo_model import DEFAULT_DATASET_DIR, DEMO, demo_config  # noqa: E402

from monai_patronus.data import pick_images
from monai_patronus.evaluation import conditioning_metrics, conditioning_table
from monai_patronus.handlers import load_network_weights
from monai_patronus.interpret.faithfulness import masking_faithfulness
from monai_patronus.tracking import dataset_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--command", required=True, help="the training command, recorded in the card")
    parser.add_argument("--train-seconds", type=float, required=True)
    parser.add_argument("--machine", default="2-core AMD EPYC CPU (no GPU), 1 thread")
    parser.add_argument("--dataset-dir", default=DEFAULT_DATASET_DIR)
    parser.add_argument("--num-prototypes-edited", type=int, default=4)
    args = parser.parse_args()

    config = demo_config(args.dataset_dir)
    net = config.get_parsed_content("network")
    source = load_network_weights(net, args.checkpoints)
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    net.eval()
    out = DEMO / "models" / "model.pt"
    out.parent.mkdir(exist_ok=True)
    torch.save({"network": net.state_dict()}, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()

    inferer = config.get_parsed_content("inferer")
    steps = config.get_parsed_content("num_inference_steps")
    held = config.get_parsed_content("heldout#dataset")
    images = pick_images(held, len(held))
    start = time.perf_counter()
    metrics = conditioning_metrics(
        net, inferer, images, num_inference_steps=steps, num_prototypes=args.num_prototypes_edited, seed=0
    )
    faith = masking_faithfulness(net.prototype_encoder, images, generator=torch.Generator().manual_seed(0))
    card = {
        "file": "models/model.pt",
        "sha256": digest,
        "size_bytes": out.stat().st_size,
        "trained_by": args.command,
        "train_seconds": round(args.train_seconds),
        "machine": args.machine,
        "trainer_state": {
            k: checkpoint["trainer"][k] for k in ("epoch", "iteration") if k in checkpoint.get("trainer", {})
        },
        "data_fingerprint": dataset_fingerprint(config.get_parsed_content("train#datalist")),
        "heldout_images": len(images),
        "num_inference_steps": steps,
        "guidance_scale": inferer.guidance_scale,
        "conditioning": metrics,
        "faithfulness": {"all": faith.summary(1.0), "top_25_percent": faith.summary(0.25)},
        "measure_seconds": round(time.perf_counter() - start),
    }
    (DEMO / "models" / "model_card.json").write_text(json.dumps(card, indent=1, default=float))
    table = conditioning_table({"shipped model": metrics})
    top = card["faithfulness"]["top_25_percent"]
    md = f"""# Model card: the shipped demo model (`models/model.pt`)

A Patronus model of this bundle's `train.json` architecture (32-px MNI152 slices, 32 prototypes), trained by the
bundle's own command with its default recipe (prototypes initialised on feature cells of the training slices,
`s` standardised before the embedding, condition dropout 0.1, v-prediction; see the README's "Training recipe").
The demo's inference and explanation configs load it by default (`weights`); pass `--weights output/checkpoints`
to use a model you trained. Demonstration only; not for clinical use (the data are a public template).

- Trained by: `{args.command}`
- Training time: {args.train_seconds / 60:.0f} min on {args.machine}; trainer state at the end: {card["trainer_state"]}
- Data: the bundle's training split, {card["data_fingerprint"]["num_items"]} slices (`dataset_fingerprint`: datalist
  sha256 `{card["data_fingerprint"]["datalist_sha256"]}`, files sha256 `{card["data_fingerprint"]["files_sha256"]}`);
  measured on the held-out split ({len(images)} slices, never trained on)
- Weights: `{card["file"]}`, {card["size_bytes"] / 1e6:.1f} MB, sha256 `{digest}`
  (a plain state dict under `"network"`, read with `torch.load(weights_only=True)`)

## Does generation follow the prototype vector? ({len(images)} held-out slices, {steps} DDIM steps, guidance {inferer.guidance_scale:g})

{table}

Faithfulness of the prototype boxes (masking test, top 25% of images per prototype): ratio
{top["ratio"]:.2f} (boxed against random-box drop of `s_k`; chance 1), win rate {top["win_rate"]:.2f}.

Regenerate these numbers with `python benchmarks/ship_demo_model.py` (see its docstring).
"""
    (DEMO / "docs" / "model_card.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
