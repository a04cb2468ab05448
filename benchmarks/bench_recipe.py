"""Which training recipe makes the demo model's generation follow ``s``? An ablation at equal wall time.

    python benchmarks/bench_recipe.py [--minutes 3] [--variants baseline,init,init+norm,...] [--json PATH]

Every variant trains the ``patronus_demo`` bundle's network (its ``train.json``, with the variant's overrides)
on the bundle's training split for the same wall-clock budget on this machine, from the same seed, then is
measured with ``conditioning_metrics`` on the bundle's held-out slices (never trained on). Chance levels:
gaps 0, win rate 0.5, edit efficacy 0, in-box ratio 1, conditioning gain 0.

Variants (cumulative unless said otherwise):

- ``paper``: the paper's recipe (prototypes uniform in [0, 1), raw ``s``, no guidance, no clipping).
- ``init``: prototypes initialised on k-means++-chosen feature cells of training images.
- ``norm``: ``paper`` + ``s`` standardised per prototype before the embedding (running statistics).
- ``init+norm``: both.
- ``init+norm+cfg``: + condition dropout 0.1 in training, guidance scale ``--guidance`` at inference.
- ``init+norm+cfg+clip``: + x̂0 clipped to [-1, 1] when sampling from noise (inversion stays unclipped).
- ``v``: ``paper`` + v-prediction only; ``init+norm+v``: ``init+norm`` + v-prediction (no guidance, no clipping).
- ``init+norm+cfg+clip+v``: + v-prediction (the network predicts ``v``; MONAI's ``VPredictionPrepareBatch``).
- ``init+norm+cfg+clip+v+ema``: + EMA weights (ignite ``EMAHandler``, decay 0.995) for inference.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _demo_model import DEFAULT_DATASET_DIR, demo_config, measure_conditioning  # noqa: E402
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from monai_patronus.data import pick_images
from monai_patronus.evaluation import conditioning_table

PAPER = {
    "init_prototypes": False,
    "condition_norm": False,
    "condition_dropout": 0.0,
    "guidance_scale": 1.0,
    "sample_clip": None,
    "ema_decay": None,
    "prediction_type": "epsilon",
}
# the cumulative steps of the recipe, composed into the variants below
INIT_NORM = {"init_prototypes": True, "condition_norm": True}
CFG = {**INIT_NORM, "condition_dropout": 0.1, "guidance_scale": "G"}
CFG_CLIP = {**CFG, "sample_clip": 1.0}
V = {"prediction_type": "v_prediction"}
VARIANTS = {
    "paper": {},
    "init": {"init_prototypes": True},
    "norm": {"condition_norm": True},
    "init+norm": INIT_NORM,
    "init+norm+cfg": CFG,
    "init+norm+cfg+clip": CFG_CLIP,
    "v": V,
    "init+norm+v": {**INIT_NORM, **V},
    "init+norm+cfg+clip+v": {**CFG_CLIP, **V},
    "init+norm+cfg+clip+v+ema": {**CFG_CLIP, **V, "ema_decay": 0.995},
}


def _config(recipe: dict, dataset_dir: str) -> ConfigParser:
    keys = (
        "init_prototypes",
        "condition_norm",
        "condition_dropout",
        "guidance_scale",
        "sample_clip",
        "prediction_type",
    )
    overrides = {"tracking_enabled": False, "progress_bar": False, "train#handlers": [], "max_epochs": 100000}
    return demo_config(dataset_dir, {**overrides, **{k: recipe[k] for k in keys}})


def run_variant(name: str, recipe: dict, args) -> dict:
    set_determinism(seed=args.seed)
    config = _config(recipe, args.dataset_dir)
    config.get_parsed_content("initialize")  # set_determinism + prototype init, as the bundle does
    trainer = config.get_parsed_content("train#trainer")
    net = config.get_parsed_content("network")
    ema = None
    if recipe["ema_decay"]:
        from ignite.handlers import EMAHandler

        ema = EMAHandler(net, momentum=1 - recipe["ema_decay"])
        ema.attach(trainer)
    # only the loss log: no checkpoints, grids or tracking in the timed loop
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    start = time.perf_counter()
    budget = args.minutes * 60

    def _stop(engine):
        if time.perf_counter() - start > budget:
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, _stop)
    trainer.run()
    train_s = time.perf_counter() - start
    net = (ema.ema_model if ema is not None else net).eval()
    if args.save:
        torch.save({"network": net.state_dict()}, f"{args.save}_{name}.pt")
    inferer = config.get_parsed_content("inferer")
    held = config.get_parsed_content("heldout#dataset")
    images = pick_images(held, min(args.num_images, len(held)))
    tail = losses[-50:]
    out = {}
    scales = [1.0] if not recipe["condition_dropout"] else [float(g) for g in args.guidance.split(",")]
    for scale in scales:
        inferer.guidance_scale = scale
        t0 = time.perf_counter()
        metrics = measure_conditioning(net, inferer, images, args)
        key = name if len(scales) == 1 else f"{name} (w={scale:g})"
        out[key] = {
            "steps": len(losses),
            "train_s": train_s,
            "loss_last50": sum(tail) / max(len(tail), 1),
            "eval_s": time.perf_counter() - t0,
            "num_images": len(images),
            **metrics,
        }
        print(key, metrics["summary"], f"steps={len(losses)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0, help="training wall time per variant")
    parser.add_argument(
        "--variants",
        default="paper,init,norm,init+norm,init+norm+cfg,init+norm+cfg+clip,init+norm+cfg+clip+v,init+norm+cfg+clip+v+ema,v,init+norm+v",
    )
    parser.add_argument(
        "--guidance", default="2", help="guidance scales evaluated (comma-separated) for variants with cfg"
    )
    parser.add_argument("--dataset-dir", default=DEFAULT_DATASET_DIR)
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--num-inference-steps", type=int, default=50)
    parser.add_argument("--num-prototypes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--save", default=None, help="save each trained network to <save>_<variant>.pt")
    args = parser.parse_args()
    results = {}
    for name in args.variants.split(","):
        recipe = {**PAPER, **VARIANTS[name]}
        recipe = {k: (1.0 if v == "G" else v) for k, v in recipe.items()}
        results.update(run_variant(name, recipe, args))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=1, default=str)
    print(
        f"\n{args.minutes:g} min of training per variant, threads={torch.get_num_threads()}, "
        f"{args.num_inference_steps} DDIM steps, guidance scale w as listed (1 = none)"
    )
    print(
        conditioning_table(
            results, {"steps": lambda r: str(r["steps"]), "loss (last 50)": lambda r: f"{r['loss_last50']:.4f}"}
        )
    )


if __name__ == "__main__":
    main()
