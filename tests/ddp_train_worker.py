"""One torchrun process of tests/test_distributed.py (not a test module itself): one launch serves both tests.

1. `diffcore generate <GEN_FLAGS>` into <out>/two/gen, as `torchrun -m diffcore generate` would run it; and with
   DEFAULT_FLAGS (the default batch and chunk) into <out>/two/defaults.
2. Writes <out>/rank<R>.json: what `train` returned on this rank, and the weights that `_fit` reached for a model
   without BatchNorm on unaugmented images (the case where 2 processes must equal 1 up to float rounding).
   Asserts on every rank that the resident loader ends with the device loader's metrics (a failed rank fails
   the torchrun launch, and with it the test).
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from diffcore.engine import distributed as D
from diffcore.train import EvalSet, PairedTrainingSet, TrainConfig, _fit, train, transforms_for


def data():
    from diffcore.data import digits

    return digits("train").subset(range(16)), digits("test").subset(range(10))


def linear_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))


# clean_lam > 0: the clean logits of the saliency pass are part of the loss
MODEL_METHODS = {"manifold-mixup": {}, "snapmix": {}, "puzzlemix": {"clean_lam": 1.0}}
EXACT = dict(
    method="vanilla", model="digits-cnn", epochs=2, batch_size=8, lr=0.01, image_size=16, augment="digits", device="cpu"
)


def fit_linear(world):
    """Weights and losses of `_fit` on a BatchNorm-free model, no augmentation: the same on any process count."""
    cfg = TrainConfig(**EXACT)
    train_ds, test_ds = data()
    tr = PairedTrainingSet(train_ds, {}, transforms_for(cfg, False))  # deterministic: resize + normalise
    model = D.wrap_ddp(linear_model(), world, torch.device("cpu"))
    te = EvalSet(test_ds, transforms_for(cfg, False))
    history = _fit(model, tr, te, cfg, torch.device("cpu"), False, world=world)
    weights = torch.cat([p.detach().flatten() for p in D.unwrap(model).parameters()])
    return {
        "weights": weights.tolist(),
        "losses": [e["train_loss"] for e in history["epochs"]],
        "final": history["final"],
    }


# the embedded profile's batch (64) and chunk (one batch) on 100 digits, as in the report that all of it ran on rank 0
DEFAULT_FLAGS = ["--few-shot", "10", "--steps", "2", "--device", "cpu"]
# the shipped tiny models, 20 digits in 5 chunks of one batch of 4 (the default chunk), 2 denoising steps
GEN_FLAGS = [
    "--few-shot",
    "2",
    "--steps",
    "2",
    "--gen-batch-size",
    "4",
    "--max-attempts",
    "2",
    "--z-pairs",
    "4",
    "--device",
    "cpu",
]


def main(out: Path) -> None:
    from diffcore.cli import main as cli

    assert cli(["generate", *GEN_FLAGS, "--out", str(out / "two" / "gen")]) == 0
    assert cli(["generate", *DEFAULT_FLAGS, "--out", str(out / "two" / "defaults")]) == 0
    world = D.world_from_env()
    D.init_process_group(world, "gloo")  # made by the generation above: reused
    train_ds, test_ds = data()
    cfg = TrainConfig(
        method="vanilla",
        model="digits-cnn",
        epochs=1,
        batch_size=8,
        lr=0.05,
        image_size=32,
        augment="digits",
        device="cpu",
    )
    r = train(cfg, train_ds, test_ds, out=out / f"result-{world.rank}.json", progress=False, world=world).result
    linear = fit_linear(world)
    # methods that look into the model (hooks, layers, input gradients) run through DDP too
    looking = {
        m: train(replace(cfg, method=m, method_args=args), train_ds, test_ds, progress=False, world=world).metrics
        for m, args in MODEL_METHODS.items()
    }
    # the device loader: rank 0 decodes the cache once, the other rank maps it
    dl = train(
        replace(cfg, loader="device", cache_dir=str(out / "cache")), train_ds, test_ds, progress=False, world=world
    ).result
    device_loader = dl["metrics"]
    # the resident loader: each rank holds that cache in its own device memory and gathers its rows of the same
    # global batches, with the same draws as the device loader: the same model (checked here, on every rank)
    rl = train(
        replace(cfg, loader="resident", cache_dir=str(out / "cache")), train_ds, test_ds, progress=False, world=world
    ).result
    resident = rl["metrics"]
    losses = [[h["train_loss"] for h in x["history"]] for x in (dl, rl)]
    assert resident == device_loader and losses[0] == losses[1], (
        f"rank {world.rank}: resident loader {resident} {losses[1]} != device loader {device_loader} {losses[0]}"
    )
    (out / f"rank{world.rank}.json").write_text(
        json.dumps(
            {
                "world": [world.rank, world.size],
                "metrics": r["metrics"],
                "history": r["history"],
                "processes": r["processes"],
                "linear": linear,
                "model_methods": looking,
                "device_loader": device_loader,
                "resident_loader": resident,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
