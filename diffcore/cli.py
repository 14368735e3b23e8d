"""`python -m diffcore {generate,merge,train,run,table,estimate,info}`: the method's steps from the command line.

Under torchrun (and, for `generate`, as a Slurm array) a command shares its work out over the processes; see
diffcore.distributed and book/scale-out.md.

Every setting starts from a profile (`--profile embedded|paper`) and is overridden by flags. All configs are
built and checked (paths, names, ranges) before any model is loaded, so bad input fails in a second.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import data as D
from .counterparts import CounterpartConfig
from .distributed import backend_for, device_for, from_main, init_process_group, world_from_env
from .filter import FilterConfig
from .generate import GenerateConfig
from .mix import MixConfig
from .profiles import profile
from .prompts import DATASET_TYPE_WORDS, PromptConfig
from .runtime import check_device_name
from .train import METHODS, TrainConfig

log = logging.getLogger("diffcore")


# ---------------------------------------------------------------- datasets
def open_dataset(name: str, root: str | None, split: str, few_shot: int | None = None, seed: int = 0) -> D.ImageSet:
    """'digits' (bundled), a paper dataset name (needs --data-root), or 'folder' (an ImageFolder at --data-root)."""
    if few_shot is not None and few_shot < 1:
        raise ValueError(f"few_shot={few_shot}: expected an integer >= 1 (training images per class)")
    if name == "digits":
        ds = D.digits(split)
    elif name == "folder":
        if root is None:
            raise ValueError("dataset=folder needs --data-root <dir with one sub-folder per class>")
        if not Path(root).expanduser().is_dir():
            raise FileNotFoundError(f"data_root={root}: no such folder; expected {D.IMAGE_FOLDER_LAYOUT} "
                                    f"(or <root>/train/<class>/... beside <root>/test)")
        if (Path(root) / split).is_dir():
            ds = D.image_folder(Path(root) / split)
        elif split == "train":
            ds = D.image_folder(root)  # a flat class tree: all of it is the training set
        else:  # never evaluate on the training images
            raise ValueError(f"dataset=folder: no {Path(root) / split}; evaluation needs <root>/test (or <root>/val "
                             f"with --test-split val) beside <root>/train, each with one sub-folder per class")
    else:
        if name not in D.PAPER_DATASETS:
            raise ValueError(f"dataset={name!r}: expected 'digits', 'folder' or one of {sorted(D.PAPER_DATASETS)}")
        if root is None:
            raise ValueError(f"dataset={name} needs --data-root <dir>; expected layout: "
                             f"{D.PAPER_DATASETS[name]['layout']}")
        ds = D.paper_dataset(name, root, split)
    ds = D.verify_images(ds)  # a truncated or non-image file is skipped now (one line each), not met hours in
    if ds.skipped:
        log.warning("%s: %d files or folders skipped (%s); they are listed in run.json / the result file",
                    ds.name, len(ds.skipped), D.skipped_summary(ds)["by_reason"])
    return D.few_shot(ds, few_shot, seed) if few_shot is not None and split == "train" else ds


def _few_shot(args, c: dict) -> int | None:
    return args.few_shot if args.few_shot is not None else c["profile"]["few_shot"]


def eval_split(name: str, root: str | None, given: str | None = None) -> str:
    """The split a dataset is evaluated on: --test-split if given, else 'test' where it exists, else 'val'."""
    if given:
        return given
    if name in D.PAPER_DATASETS:
        return "test" if "test" in D.PAPER_DATASETS[name]["splits"] else "val"
    if name == "folder" and root is not None and not (Path(root) / "test").is_dir() and (Path(root) / "val").is_dir():
        return "val"
    return "test"


# ---------------------------------------------------------------- configs from profile + flags
def _pick(args, names: dict[str, str]) -> dict:
    """{config field: value} for each flag the user actually gave."""
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag, None) is not None}


def build_configs(args) -> dict:
    p = profile(args.profile)
    dataset = getattr(args, "dataset", None) or p["dataset"]
    by_dataset = {"dataset_type": DATASET_TYPE_WORDS.get(dataset, "natural"),
                  "negative_key": "digits" if dataset == "digits" else "natural"}
    prompt = PromptConfig(**{**p["prompt"], **by_dataset, **_pick(args, {"template": "template", "negative_prompt": "negative_prompt",
                                                            "dataset_type": "dataset_type"})})
    gen = GenerateConfig(**{**p["generate"], **_pick(args, {
        "model": "model", "config_dir": "config_dir", "vae": "vae", "steps": "steps", "guidance_scale": "guidance_scale",
        "size": "size", "gen_batch_size": "batch_size", "dtype": "dtype", "seed": "run_seed",
        "compile": "compile", "fp8": "fp8", "step_cache": "step_cache", "compile_scope": "compile_scope"})})
    filt = FilterConfig(**{**p["filter"], **_pick(args, {
        "clip_model": "clip_model", "clip_pretrained": "clip_pretrained", "clip_config": "clip_config",
        "z_pairs": "z_pairs", "max_attempts": "max_attempts"})})
    cp = CounterpartConfig(**{**p["counterparts"], **_pick(args, {"fraction": "fraction", "chunk_size": "chunk_size"})})
    train_over = _pick(args, {"method": "method", "arch": "model", "epochs": "epochs", "batch_size": "batch_size",
                              "lr": "lr", "device": "device", "workers": "workers", "pretrained": "pretrained",
                              "loader": "loader", "cache_dir": "cache_dir",
                              "fraction": "fraction", "image_size": "image_size", "augment": "augment"})
    mix = MixConfig(**_pick(args, {"mix_mode": "mode", "lam_alpha": "lam_alpha", "lam_beta": "lam_beta"}))
    if getattr(args, "method_arg", None):
        train_over["method_args"] = _method_args(args.method_arg)
    train = TrainConfig(**{**p["train"], **train_over, "mix": mix})
    if getattr(args, "device", None) is not None:
        check_device_name(args.device)
    return {"profile": p, "prompt": prompt, "generate": gen, "filter": filt, "counterparts": cp, "train": train}


def check_generation(args, c: dict) -> None:
    """Every cheap check of the generation settings, before any dataset is read or model loaded."""
    from .filter import check_clip_files
    from .generate import _check_model_path, check_guidance
    from .prompts import negative_prompt
    from .runtime import resolve_device, resolve_dtype

    check_guidance(negative_prompt(c["prompt"]), c["generate"])
    if getattr(args, "io_threads", None) is not None and args.io_threads < 0:
        raise ValueError(f"io_threads={args.io_threads}: expected >= 0 (0: PNG writing and source decoding in line)")
    check_clip_files(c["filter"])
    _check_model_path(c["generate"])
    resolve_dtype(c["generate"].dtype, resolve_device(args.device or "auto"))


def _method_args(items: list[str]) -> dict:
    """['alpha=0.2', 'prob=1'] -> {'alpha': 0.2, 'prob': 1}; values parsed as JSON, else kept as strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--method-arg {item!r}: expected KEY=VALUE, e.g. --method-arg alpha=0.2")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# ---------------------------------------------------------------- commands
def cmd_generate(args, ds: D.ImageSet | None = None, world=None) -> int:
    """ds: the training set when the caller has opened it already (`run`), else opened from the flags; world:
    `run`'s (whose Slurm array, if any, is a sweep), else this process's shard from the environment."""
    from .counterparts import check_out_dir, make_counterparts
    from .filter import load_clip
    from .generate import load_pipeline
    from .runtime import resolve_dtype

    c = build_configs(args)
    check_generation(args, c)
    if ds is None:
        ds = open_dataset(args.dataset or c["profile"]["dataset"], args.data_root, "train", _few_shot(args, c))
    cfgs = (c["prompt"], c["generate"], c["filter"], c["counterparts"])
    check_out_dir(ds, args.out, *cfgs)  # a resume with other settings fails before any model is loaded
    world = world or world_from_env()  # torchrun / Slurm array: this process's shard (diffcore.distributed)
    if world.size > 1:
        log.info("shard %s: chunks c with c %% %d == %d of %s", world.tag, world.size, world.rank, args.out)
    device = device_for(world, args.device or "auto")
    dtype = resolve_dtype(c["generate"].dtype, device)
    clip = load_clip(c["filter"], device)
    pipe = load_pipeline(c["generate"], device, dtype)
    init_process_group(world, "gloo")  # generation only needs barriers; `run` may have made the group already
    io_threads = 4 if getattr(args, "io_threads", None) is None else args.io_threads
    info = make_counterparts(ds, pipe, clip, args.out, *cfgs, world=world, io_threads=io_threads)
    if info is None:
        print(f"shard {world.tag} done -> {args.out}; once every task of the array is done, run `diffcore merge` "
              f"with the same flags")
    elif world.is_main:
        _report(info, ds, args.out)
    return 0


def cmd_merge(args) -> int:
    """After a Slurm array of `generate` tasks: the shards -> manifest.csv, run.json and preview.png."""
    from .counterparts import finish_counterparts

    c = build_configs(args)
    ds = open_dataset(args.dataset or c["profile"]["dataset"], args.data_root, "train", _few_shot(args, c))
    cfgs = (c["prompt"], c["generate"], c["filter"], c["counterparts"])
    _report(finish_counterparts(ds, args.out, *cfgs), ds, args.out)
    return 0


def cmd_estimate(args) -> int:
    from .estimate import H100_S_PER_IMG, PAPER_DISCARD, table

    print(table(args.gpus, args.fraction, args.s_per_img or H100_S_PER_IMG,
                PAPER_DISCARD if args.discard is None else args.discard, args.chunk_size or 256))
    return 0


def _report(info: dict, ds: D.ImageSet, out: str) -> None:
    """Discard rates of a finished generated set, and its preview."""
    s = info["summary"]
    per_class = sorted(s["per_class"].items(), key=lambda kv: -kv[1]["discard_rate"])
    print("discarded per class (highest first): " + ", ".join(
        f"{name} {100 * v['discard_rate']:.0f}%" for name, v in per_class[:10]) + (" ..." if len(per_class) > 10 else ""))
    print(f"kept {s['kept']} of {s['attempts']} generated images ({100 * s['discard_rate']:.1f}% discarded, "
          f"{s['invalid']} invalid), {s['no_counterpart']} sources without counterpart"
          f"{f' ({n} unreadable)' if (n := s['unreadable']) else ''} -> {out}")
    if s["kept"]:
        from .preview import save_preview

        print(f"preview (real | kept | rejected, per class): {save_preview(ds, out)}")


def open_train_test(args, c: dict) -> tuple[D.ImageSet, D.ImageSet]:
    """The training set (few-shot if asked) and the evaluation set, checked to name the same classes."""
    name = args.dataset or c["profile"]["dataset"]
    train_ds = open_dataset(name, args.data_root, "train", _few_shot(args, c))
    split = eval_split(name, args.data_root, args.test_split)
    test_ds = open_dataset(name, args.data_root, split)
    if test_ds.classes != train_ds.classes:
        only = sorted(set(train_ds.classes) ^ set(test_ds.classes))[:5]
        raise ValueError(f"dataset={name}: the {split} split's classes differ from train's "
                         f"({len(test_ds.classes)} vs {len(train_ds.classes)}; e.g. {only}): labels would not match")
    return train_ds, test_ds


def cmd_train(args, datasets: tuple[D.ImageSet, D.ImageSet] | None = None) -> int:
    """datasets: (train, test) when the caller has opened them already (`run`), else opened from the flags.

    A killed training resumes from the checkpoint beside --out (see diffcore.checkpoint)."""
    from .train import check_generated, check_train_out, train

    c = build_configs(args)
    cfg = replace(c["train"], seed=args.seed if args.seed is not None else c["train"].seed)
    check_train_out(args.out)
    check_generated(cfg, args.generated)
    world = world_from_env(array=False)  # under torchrun: DDP, rank 0 writes; an array's tasks: separate runs
    device = device_for(world, cfg.device)  # cuda asked for on a machine without: fail now, not after the data
    train_ds, test_ds = datasets or open_train_test(args, c)
    init_process_group(world, backend_for(device))
    r = train(cfg, train_ds, test_ds, generated=args.generated, out=args.out, world=world)
    if world.is_main:
        print(json.dumps({"method": cfg.method, "fraction": cfg.fraction, **r["metrics"]}))
    return 0


def cmd_run(args) -> int:
    """The main job: generate counterparts once (100%), train vanilla and DiffCoRe-Mix-50/-100 over seeds, table."""
    from .results import load_results, markdown, results_table

    out = Path(args.out)
    c = build_configs(args)
    p = c["profile"]
    check_generation(args, c)
    world = world_from_env(array=False)  # a Slurm array of `run` jobs is a sweep of separate runs
    device = device_for(world, c["train"].device)
    datasets = open_train_test(args, c)  # opened once; a bad evaluation split fails now, not after generation
    init_process_group(world, backend_for(device))  # one group for generation and training
    gen_dir = out / "generated"
    t0 = time.perf_counter()
    cmd_generate(argparse.Namespace(**{**vars(args), "out": str(gen_dir), "fraction": 1.0}), datasets[0], world)
    t_gen = time.perf_counter() - t0
    runs = [("vanilla", 1.0)] + [("diffcore", f) for f in p["fractions"]]
    for seed in args.seeds or p["seeds"]:
        for method, fraction in runs:
            tag = "vanilla" if method == "vanilla" else f"{method}-{round(100 * fraction)}"
            res = out / "results" / f"{tag}-seed{seed}.json"
            if from_main(res.is_file() and not args.force, world):  # rank 0 decides for all (one DDP job)
                if world.is_main:
                    print(f"{res} exists, skipped (--force to redo)")
                continue
            cmd_train(argparse.Namespace(**{**vars(args), "method": method, "fraction": fraction, "seed": seed,
                                            "generated": str(gen_dir), "out": str(res)}), datasets)
    if not world.is_main:
        return 0
    table = results_table(load_results(out / "results"))
    md = markdown(table)
    table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(md + "\n")
    print(f"\n{md}\n\ngeneration {t_gen:.0f} s; total {time.perf_counter() - t0:.0f} s; written to {out}/table.md")
    return 0


def cmd_table(args) -> int:
    from .results import load_results, markdown, results_table

    print(markdown(results_table(load_results(args.folder))))
    return 0


def cmd_info(args) -> int:
    from .runtime import provenance

    print(json.dumps({"profile": args.profile, "settings": profile(args.profile), "provenance": provenance()},
                     indent=2, default=str))
    return 0


# ---------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`diffcore: error: argument --steps: invalid int value: 'x'`), not
    the usage block: the same shape as every other refusal."""

    def error(self, message: str):
        print(f"diffcore: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="embedded", help="embedded (default, offline CPU) or paper")
    p.add_argument("--dataset", help="digits | folder | cifar100 | tiny-imagenet-200 | imagenet-1k | flowers102 | "
                                     "cub-200-2011 | stanford-cars | caltech101")
    p.add_argument("--data-root", help="local dataset root (nothing is downloaded)")
    p.add_argument("--few-shot", type=int, help="k training images per class (Table 2 uses 10)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, help="run seed (generation seeds and training seed derive from it)")
    p.add_argument("--fraction", type=float, help="share of images with counterparts: 0.5 (-50) or 1.0 (-100)")
    g = p.add_argument_group("generation (Eq. 4)")
    g.add_argument("--model", help="diffusers folder, cached hub id, or single .safetensors (CosXL)")
    g.add_argument("--config-dir", help="local SDXL diffusers folder for a single-file model")
    g.add_argument("--vae", help="VAE folder, e.g. sdxl-vae-fp16-fix")
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance-scale", type=float, help="w = 1 + gamma")
    g.add_argument("--size", type=int)
    g.add_argument("--gen-batch-size", type=int)
    g.add_argument("--chunk-size", type=int, help="sources per unit of work shared out to processes")
    g.add_argument("--dtype", help="auto | float32 | bfloat16 | float16")
    g.add_argument("--template", help="contextual prompt template with {label} and {dataset_type}")
    g.add_argument("--dataset-type", help="word for {dataset_type} in the template")
    g.add_argument("--negative-prompt", help="'' for none")
    g.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                   help="CUDA: call the stock pipeline instead of fastgen's compiled path (same images up to rounding)")
    g.add_argument("--fp8", action="store_true", default=None,
                   help="opt-in, Hopper GPUs: float8 matmuls in the UNet's attention blocks (changes the images)")
    g.add_argument("--compile-scope", help="CUDA: full (default: UNet + VAE decoder, ~2.5 min per batch shape) | "
                   "regional (the UNet's transformer blocks only: less to compile)")
    g.add_argument("--step-cache", type=int, metavar="N",
                   help="opt-in DeepCache: full UNet every N-th step, its outer blocks on cached features between "
                        "(changes the images; `diffcore bench optin` measures how much); default 1 = off")
    g.add_argument("--io-threads", type=int, metavar="N",
                   help="threads that decode sources and write PNGs while the GPU generates (default 4; 0: in line)")
    f = p.add_argument_group("filtration (Eq. 5)")
    f.add_argument("--clip-model")
    f.add_argument("--clip-pretrained", help="local open_clip weights file")
    f.add_argument("--clip-config", help="open_clip model-config JSON to register")
    f.add_argument("--z-pairs", type=int)
    f.add_argument("--max-attempts", type=int)
    t = p.add_argument_group("training")
    t.add_argument("--method", choices=sorted(METHODS))
    t.add_argument("--method-arg", action="append", metavar="KEY=VALUE",
                   help="a hyperparameter of the method (repeatable), e.g. alpha=0.2 for mixup")
    t.add_argument("--arch", help="classifier: digits-cnn | preactresnet18 | preactresnet34 | resnet50 | "
                                  "densenet121 | wide_resnet101_2")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--image-size", type=int)
    t.add_argument("--augment", choices=["imagenet", "small", "digits"])
    t.add_argument("--workers", type=int)
    t.add_argument("--loader", choices=["pil", "device", "resident"],
                   help="device: decode each image once into a uint8 cache and augment batches on the device; "
                        "resident: that cache held in device memory, batches gathered there (same weights)")
    t.add_argument("--cache-dir", help="where the device loader's decode-once caches go (default: beside --out)")
    t.add_argument("--pretrained", help="local weights file to fine-tune from (Table 5)")
    t.add_argument("--mix-mode", choices=["both", "pixel", "patch", "none"])
    t.add_argument("--lam-alpha", type=float)
    t.add_argument("--lam-beta", type=float)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="diffcore", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate + filter counterparts into --out")
    _common(g)
    g.add_argument("--out", required=True)
    t = sub.add_parser("train", help="train one classifier, write a result JSON")
    _common(t)
    t.add_argument("--generated", help="folder written by `diffcore generate`")
    t.add_argument("--test-split", help="evaluation split (default: test, or val where there is no test)")
    t.add_argument("--out", required=True, help="result JSON path")
    r = sub.add_parser("run", help="the main job: generate, train vanilla and DiffCoRe-Mix-50/-100, print a table")
    _common(r)
    r.add_argument("--out", default="runs/embedded")
    r.add_argument("--seeds", type=int, nargs="+")
    r.add_argument("--test-split", help="evaluation split (default: test, or val where there is no test)")
    r.add_argument("--force", action="store_true", help="retrain even where a result file exists")
    m = sub.add_parser("merge", help="after a Slurm array of `generate` tasks: merge the shards (same flags)")
    _common(m)
    m.add_argument("--out", required=True)
    e = sub.add_parser("estimate", help="GPU-hours to generate the paper datasets' counterparts")
    e.add_argument("--gpus", type=int, default=8)
    e.add_argument("--fraction", type=float, default=1.0, help="0.5 (-50) or 1.0 (-100)")
    e.add_argument("--s-per-img", type=float, help="seconds per image (default: measured, stock SDXL, H100)")
    e.add_argument("--discard", type=float, help="share of generated images discarded (default: the paper's)")
    e.add_argument("--chunk-size", type=int, help="sources per chunk (default: the paper profile's 256)")
    tb = sub.add_parser("table", help="print the results table of a folder")
    tb.add_argument("folder")
    i = sub.add_parser("info", help="print a profile's settings and this machine's provenance")
    i.add_argument("--profile", default="embedded")
    # their own parsers: everything after the word goes to `python -m diffcore.edit` / `python -m diffcore.bench`
    sub.add_parser("edit", help="DiffuseMix's image-edited set (see `diffcore edit --help`)", add_help=False)
    sub.add_parser("bench", help="time stock vs diffcore generation and training (see `diffcore bench --help`)",
                   add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["edit"]:
        from .edit import main as edit_main

        return edit_main(argv[1:])
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(argv[1:])
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (one line, printed by _Parser) or --help
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return {"generate": cmd_generate, "merge": cmd_merge, "estimate": cmd_estimate, "train": cmd_train,
                "run": cmd_run, "table": cmd_table,
                "info": cmd_info}[args.command](args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line, no traceback
        print(f"diffcore: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
