"""The embedded profile's tiny stand-in models, trained by diffcore itself on the digits TRAIN split.

    python -m diffcore.tiny train-vae    # AutoencoderKL, 32x32x3 <-> 8x8x4            -> assets/tiny-t2i/vae/
    python -m diffcore.tiny train-t2i    # UNet2DConditionModel + CLIPTextModel, DDPM  -> assets/tiny-t2i/
    python -m diffcore.tiny train-clip   # open_clip ViT, class-aware contrastive       -> assets/tiny-clip/
    python -m diffcore.tiny check        # quality on the TEST split                    -> assets/tiny-quality.json

The text-to-image model is a real diffusers `StableDiffusionPipeline` folder with the real CLIP BPE tokenizer
(49408 tokens), so any English prompt, including the authors' long negative prompt, tokenizes. Its captions
name the digit, use the paper's template among others, and carry style words measured on the image itself
("thin", "faint", "broken strokes", "blurry", ...), so that a contextual prompt and a negative prompt act through
a real text encoder as in Eq. (4). These are stand-ins that let the pipeline run offline on a CPU: numbers made
with them check the code, they are not the paper's results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gzip
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.checks import check_fields, finite_float, json_text
from ..models import DigitsCNN
from ..profiles import ASSETS, TINY_CLIP_CONFIG, TINY_CLIP_WEIGHTS, TINY_T2I_DIR
from ..prompts import DATASET_TYPE_WORDS, NEGATIVE_PROMPTS, PAPER_TEMPLATE

TINY_CLIP_NAME = "diffcore-tiny-clip"  # open_clip registry name = stem of TINY_CLIP_CONFIG
QUALITY_JSON = ASSETS / "tiny-quality.json"
TRAINING_JSON = ASSETS / "tiny-training.json"  # provenance of the three training runs
MAX_ASSET_MB = 25.0  # all shipped weights together (brief: <= 25 MB)

DIGITS_DATASET_TYPE = DATASET_TYPE_WORDS["digits"]  # "handwritten digit"
DIGITS_NEGATIVE_PROMPT = NEGATIVE_PROMPTS["digits"]  # "thin, faint, broken strokes, blurry": all caption words
CLIP_ZERO_SHOT_TEMPLATE = "a handwritten digit {label}"  # the text side of the tiny CLIP's zero-shot classifier

# Caption templates: {label} = digit name, {dataset_type} = "handwritten digit", {style} = words measured on the
# image (see style_words). The paper's template (Sec. 4) is first and verbatim; "{style}" alone teaches the text
# encoder what a style-only negative prompt such as DIGITS_NEGATIVE_PROMPT means.
DIGITS_TEMPLATES = (
    PAPER_TEMPLATE,  # "Generate heavy snow to the {label}, a {dataset_type} object"
    "a {style} handwritten digit {label}",
    "{label}",
    "a photo of the number {label}",
    "a handwritten digit {label}",
    "{label}, {style}",
    "{style}",
)
# Sampling weights of the templates: the paper's template is what `check` and the embedded profile prompt with.
TEMPLATE_WEIGHTS = (0.3, 0.15, 0.1, 0.1, 0.1, 0.15, 0.1)
CAPTION_DROPOUT = 0.1  # fraction of captions replaced by "" so that the model also learns eps(x, "") for CFG

# ---------------------------------------------------------------- model presets (plain dicts, DiT style)
# VAE: 3 blocks = two 2x downsamples, so 32x32x3 <-> 8x8x4 (pipeline: vae_scale_factor 4, default size 32).
# 8x8 is the scans' native resolution (sklearn's digits are 8x8, upsampled by data.digits), so nothing is lost,
# and the UNet then runs at 8x8 and 4x4. A 16x16x4 version (2 blocks, 2500 steps in the same budget) drew the
# prompted digit 68% of the time; this one 97% (tiny-quality.json).
# Widths (16, 32, 32), no mid-block attention: 0.36 s/step at batch 64 on 1 CPU thread.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
    mid_block_add_attention=False,
)
# Text encoder: 32 wide so that its 49408 x 32 token table stays 6.3 MB in fp32; 3 layers, 4 heads of 8.
TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=32,
)
# UNet on 8x8x4 latents: cross-attention at 8x8, 4x4 and in the mid block; 0.16 s/step at batch 32, 1 thread.
# attention_head_dim is diffusers' legacy name for the number of heads.
UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
)
# Stable Diffusion's training noise schedule (scaled_linear 0.00085..0.012, 1000 steps, epsilon prediction).
NOISE_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
)
# Sampler shipped in the folder: DPM-Solver++(2M) gives good samples in 20 steps (the embedded profile's count).
SAMPLER = dict(
    NOISE_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace", steps_offset=1
)
# CLIP: a ViT with 4x4 patches (8x8 = 64 tokens); head_width set because width < 64 (open_clip default 64).
# No preprocess_cfg: open_clip passes every key of a registered config to CLIP(...), which rejects it, so the
# default OpenAI mean/std preprocessing is used in training and inference alike.
CLIP_MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 4, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default preprocess normalisation
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------- configs, one per step
@dataclass(frozen=True)
class VaeTrainConfig:
    steps: int = 1500  # AdamW steps; the L1+MSE loss went 0.036 @250, 0.009 @1000, 0.008 @1500 (measured)
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # AdamW; tiny conv nets tolerate a high rate, cosine-decayed to 0
    kl_weight: float = 1e-6  # Stable Diffusion's KL weight: latents near-deterministic, scale fixed afterwards
    seed: int = 0  # model init, batch order and posterior samples

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)


@dataclass(frozen=True)
class T2ITrainConfig:
    steps: int = 4000  # AdamW steps (14.5 min at 1 thread, batch 32; 2800 steps of a (48, 96) UNet: 96% vs 98%)
    batch_size: int = 32  # 0.22 s/step at 1 thread: the CPU budget buys steps rather than batch
    lr: float = 1e-3  # UNet and text encoder; 100-step warmup, cosine to 0
    warmup: int = 100  # steps of linear warmup: Adam's moments are noisy at the start
    min_snr_gamma: float = 5.0  # Min-SNR loss weighting (Hang et al. 2023): faster convergence for eps-prediction
    ema_decay: float = 0.999  # EMA of weights, shipped instead of the raw ones: less noisy samples
    seed: int = 0  # model init, captions, noise, timesteps

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)


@dataclass(frozen=True)
class ClipTrainConfig:
    steps: int = 1500  # AdamW steps (~9 min at 1 thread)
    batch_size: int = 64  # image-caption pairs per step, ~6 per class
    lr: float = 1e-3  # 100-step warmup, cosine to 0
    weight_decay: float = 0.05  # ViTs on 898 images overfit without it
    seed: int = 0

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)


@dataclass(frozen=True)
class CheckConfig:
    per_class: int = 50  # generated images per digit and setting (brief: 50)
    steps: int = 20  # denoising steps: the embedded profile's (profiles.py)
    guidance_scale: float = 4.0  # w = 1 + gamma of Eq. (4): the embedded profile's
    classifier_epochs: int = 20  # checker CNN epochs on the real train split
    seed: int = 0  # checker init; image seeds = derive_seed("tiny-check", seed, setting, class, i)
    sweep: tuple[float, ...] = (2.0, 7.0)  # further guidance scales measured for the contextual setting

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)


# ---------------------------------------------------------------- data and captions
def digit_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32) float32 grayscale in [0, 1] and (N,) int64 labels of a digits split."""
    from ..data import digits

    ds = digits(split, size=32)
    gray = np.stack([np.asarray(ds.load(i))[..., 0] for i in range(len(ds))]).astype(np.float32) / 255.0  # (N, 32, 32)
    return gray, np.asarray(ds.labels, dtype=np.int64)


INK = 0.35  # a pixel is ink above this grey level (the scans' 17 grey levels, upsampled)
LINK = 0.6  # strokes that fall apart above 60% of the image's peak are joined by weak ink: "broken strokes"
BLUR_SIGMA = 1.5  # px at 32x32: the Gaussian blur that makes a "blurry" training variant (see blurred)
BLUR_FRACTION = 0.15  # share of training samples drawn from the blurred variant, captioned "blurry"
STYLE_ORDER = ["thin", "bold", "faint", "bright", "broken strokes", "blurry", "small", "large"]  # as in P_n


def image_measures(gray: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: ink area, ink brightness, bounding-box area, stroke pieces at LINK. (N,) each."""
    from scipy import ndimage

    mask = gray > INK  # (N, 32, 32)
    area = mask.mean(axis=(1, 2))
    bright = (gray * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    box, pieces = np.zeros(len(gray)), np.zeros(len(gray), dtype=np.int64)
    for i, (g, m) in enumerate(zip(gray, mask)):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box[i] = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) / m.size if len(rows) else 0.0
        lab, _ = ndimage.label(g > LINK * g.max())
        pieces[i] = int((np.bincount(lab.ravel())[1:] >= 8).sum())  # pieces of >= 8 px: no specks
    return dict(area=area, bright=bright, box=box, pieces=pieces)


def style_words(gray: np.ndarray, labels: np.ndarray) -> list[list[str]]:
    """Style words per image, each measured against the image's own class (a thin "one" is thin for a "one").

    Terciles within the class: ink area -> thin/bold, ink brightness -> faint/bright; quartiles of the bounding
    box -> small/large; more than one stroke piece at LINK -> "broken strokes". Sharpness is not measured: in
    these scans it tracks brightness (r = -0.8), so "blurry" comes from a real blur instead (see blurred).
    """
    m = image_measures(gray)
    words: list[list[str]] = [[] for _ in range(len(gray))]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        for key, lo, hi, q in (
            ("area", "thin", "bold", 1 / 3),
            ("bright", "faint", "bright", 1 / 3),
            ("box", "small", "large", 1 / 4),
        ):
            a, b = np.quantile(m[key][idx], [q, 1 - q])
            for i in idx:
                if m[key][i] < a:
                    words[i].append(lo)
                elif m[key][i] > b:
                    words[i].append(hi)
    for i in np.flatnonzero(m["pieces"] > 1):
        words[i].append("broken strokes")
    return [sorted(w, key=STYLE_ORDER.index) for w in words]


def blurred(gray: np.ndarray) -> np.ndarray:
    """The "blurry" variant of (N, 32, 32) images: Gaussian blur of BLUR_SIGMA px, peak kept."""
    from scipy import ndimage

    out = ndimage.gaussian_filter(gray, sigma=(0, BLUR_SIGMA, BLUR_SIGMA))  # (N, 32, 32)
    return (out * gray.max(axis=(1, 2), keepdims=True) / out.max(axis=(1, 2), keepdims=True)).astype(np.float32)


def with_blur(style: list[str]) -> list[str]:
    return sorted(style + ["blurry"], key=STYLE_ORDER.index)


def caption(
    label: str,
    style: list[str],
    rng: np.random.Generator,
    dropout: float = CAPTION_DROPOUT,
    templates: tuple[str, ...] = DIGITS_TEMPLATES,
    weights: tuple[float, ...] = TEMPLATE_WEIGHTS,
) -> str:
    """One random caption of an image: a template, a random non-empty subset of its style words, or ""."""
    if rng.random() < dropout:
        return ""
    words = [w for w in style if rng.random() < 0.7] or (style[:1] if style else [])  # subsets: words act alone too
    usable = [(t, p) for t, p in zip(templates, weights) if words or "{style}" not in t]
    p = np.array([w for _, w in usable])
    t = usable[rng.choice(len(usable), p=p / p.sum())][0]
    return t.format(label=label, dataset_type=DIGITS_DATASET_TYPE, style=", ".join(words))


# ---------------------------------------------------------------- the real CLIP BPE tokenizer
def clip_bpe() -> tuple[list[str], list[tuple[str, str]]]:
    """OpenAI CLIP's (vocabulary, merges), built from open_clip's bundled BPE file as CLIP's SimpleTokenizer does.

    256 byte symbols, the same with '</w>', 48894 merges, <|startoftext|> and <|endoftext|> = 49408 tokens.
    """
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]  # line 0 is a version header
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != 49408:
        raise RuntimeError(f"{bpe}: built {len(vocab)} tokens, expected 49408 (unexpected open_clip BPE file)")
    return vocab, merges


def clip_bpe_tokenizer():
    """transformers CLIPTokenizer with OpenAI CLIP's vocabulary; ids equal open_clip's (checked in tests)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges, model_max_length=77)


def write_bpe_files(folder: Path) -> None:
    """vocab.json + merges.txt, the OpenAI CLIP layout: transformers 4.x (slow tokenizer) and 5.x both load it."""
    vocab, merges = clip_bpe()
    (folder / "vocab.json").write_text(json_text({v: i for i, v in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )


# ---------------------------------------------------------------- helpers
@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's global RNG for weight init only, and restore it after: no global side effect."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def lr_at(step: int, total: int, warmup: int = 100) -> float:
    """Linear warmup then cosine decay to 0, as a multiplier of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup)))


def _progress(n: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, mininterval=5.0, file=sys.stderr)


def _record(out: Path, step: str, info: dict) -> None:
    """Merge `info` into <out>/tiny-training.json under `step`, with provenance."""
    from ..engine.runtime import provenance

    path = out / TRAINING_JSON.name
    log = json.loads(path.read_text()) if path.exists() else {}
    log[step] = {**info, "provenance": provenance()}
    path.write_text(json_text(log, indent=2) + "\n")


def _world_readable(folder: Path) -> None:
    """safetensors writes files 0600; shipped package data must be readable by every user."""
    for f in Path(folder).rglob("*.safetensors"):
        f.chmod(0o644)


def _to_pm1(gray: np.ndarray) -> torch.Tensor:
    """(N, 32, 32) in [0, 1] -> (N, 3, 32, 32) in [-1, 1], the VAE's range."""
    return torch.from_numpy(gray)[:, None].expand(-1, 3, -1, -1).mul(2).sub(1).contiguous()  # (N, 3, 32, 32)


# ---------------------------------------------------------------- step 1: VAE
def train_vae(cfg: VaeTrainConfig, out: Path = ASSETS, device: str | torch.device = "cpu") -> dict:
    from diffusers import AutoencoderKL

    gray, _ = digit_arrays("train")
    x = _to_pm1(gray).to(device)  # (N, 3, 32, 32)
    with seeded(cfg.seed):
        vae = AutoencoderKL(**VAE_CONFIG)
    vae.to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg.steps))
    g = torch.Generator().manual_seed(cfg.seed)
    t0, bar = time.time(), _progress(cfg.steps, "train-vae")
    for step in bar:
        batch = x[torch.randint(len(x), (cfg.batch_size,), generator=g).to(device)]  # (B, 3, 32, 32)
        post = vae.encode(batch).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample  # (B, 3, 32, 32)
        rec_loss = F.l1_loss(rec, batch) + F.mse_loss(rec, batch)  # L1 keeps strokes crisp, MSE the grey levels
        loss = rec_loss + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(rec=f"{rec_loss.item():.4f}")
    wall = time.time() - t0
    vae.eval()
    with torch.no_grad():
        std = torch.cat([vae.encode(x[s : s + 256]).latent_dist.mean for s in range(0, len(x), 256)]).std().item()
        vae.register_to_config(scaling_factor=round(1.0 / std, 5))  # unit-variance latents for the UNet (as SD)
        test = _to_pm1(digit_arrays("test")[0]).to(device)
        rec = torch.cat(
            [vae.decode(vae.encode(test[s : s + 256]).latent_dist.mean).sample for s in range(0, len(test), 256)]
        )  # (N, 3, 32, 32)
        mse = F.mse_loss(rec.clamp(-1, 1) / 2 + 0.5, test / 2 + 0.5).item()
    path = out / TINY_T2I_DIR.name / "vae"
    vae.to("cpu").save_pretrained(path, safe_serialization=True)
    _world_readable(path)
    info = dict(
        config=asdict(cfg),
        device=str(device),
        model=VAE_CONFIG,
        wall_s=round(wall, 1),
        final_rec_loss=round(rec_loss.item(), 5),
        latent_std=round(std, 5),
        scaling_factor=vae.config.scaling_factor,
        test_psnr_db=round(10 * np.log10(1.0 / mse), 2),
        saved=str(path),
    )
    _record(out, "vae", info)
    return info


# ---------------------------------------------------------------- step 2: UNet + text encoder
def _encode_latents(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, (N, 4, 8, 8) each, on x's device: the VAE runs once, not every step."""
    with torch.no_grad():
        posts = [vae.encode(x[s : s + 256]).latent_dist for s in range(0, len(x), 256)]
    return torch.cat([p.mean for p in posts]), torch.cat([p.std for p in posts])


class Ema:
    """Exponential moving average of a module's parameters (kept in fp32 beside it)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay, self.shadow = decay, [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short memory early, so init weights fade fast
        torch._foreach_lerp_(self.shadow, [p.detach() for p in module.parameters()], 1 - d)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, module.parameters()):
            p.copy_(s)


def train_t2i(cfg: T2ITrainConfig, out: Path = ASSETS, device: str | torch.device = "cpu") -> dict:
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    vae_dir = out / TINY_T2I_DIR.name / "vae"
    if not (vae_dir / "config.json").is_file():
        raise FileNotFoundError(f"no VAE at {vae_dir}: run `python -m diffcore.tiny train-vae --out {out}` first")
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True).eval().to(device)
    gray, labels = digit_arrays("train")
    styles = style_words(gray, labels)
    blur_styles = [with_blur(w) for w in styles]
    mean, std = _encode_latents(vae, _to_pm1(np.concatenate([gray, blurred(gray)])).to(device))  # (2N, 4, 8, 8)
    mean, std = mean.cpu(), std.cpu()  # rows: sharp, then blurred; noise is drawn on the CPU, as on every device
    sf = vae.config.scaling_factor
    tokenizer = clip_bpe_tokenizer()
    with seeded(cfg.seed):
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        unet = UNet2DConditionModel(**UNET_CONFIG)
    modules = torch.nn.ModuleList([unet, text_encoder]).to(device)
    noise = DDPMScheduler(**NOISE_SCHEDULE)
    abar = noise.alphas_cumprod  # (1000,)
    opt = torch.optim.AdamW(modules.parameters(), lr=cfg.lr, weight_decay=0.0)  # decay would shrink unseen tokens
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg.steps, cfg.warmup))
    ema = Ema(modules, cfg.ema_decay)
    g, rng = torch.Generator().manual_seed(cfg.seed), np.random.default_rng(cfg.seed)
    names = np.array(_digit_names())
    t0, bar = time.time(), _progress(cfg.steps, "train-t2i")
    for step in bar:
        idx = torch.randint(len(labels), (cfg.batch_size,), generator=g)
        blur = torch.rand(len(idx), generator=g) < BLUR_FRACTION  # (B,) use the blurred variant
        texts = [
            caption(names[labels[i]], blur_styles[i] if b else styles[i], rng)
            for i, b in zip(idx.tolist(), blur.tolist())
        ]
        ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        row = idx + blur.long() * len(labels)  # (B,) rows of mean/std
        z0 = (mean[row] + std[row] * torch.randn(mean[row].shape, generator=g)) * sf  # (B, 4, 8, 8)
        eps = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, noise.config.num_train_timesteps, (len(idx),), generator=g)  # (B,)
        zt = noise.add_noise(z0, eps, t)
        snr = abar[t] / (1 - abar[t])
        w = snr.clamp(max=cfg.min_snr_gamma) / snr  # (B,) Min-SNR-gamma for eps-prediction
        zt, t, ids, eps, w = (v.to(device) for v in (zt, t, ids, eps, w))
        pred = unet(zt, t, encoder_hidden_states=text_encoder(ids)[0]).sample  # (B, 4, 8, 8)
        loss = (w * (pred - eps).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)  # rare large-t spikes otherwise jolt the EMA
        opt.step()
        sched.step()
        ema.update(modules, step)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    wall = time.time() - t0
    ema.copy_to(modules)
    modules.to("cpu")
    vae.to("cpu")
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=DPMSolverMultistepScheduler(**SAMPLER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = out / TINY_T2I_DIR.name
    pipe.save_pretrained(path, safe_serialization=True)
    write_bpe_files(path / "tokenizer")  # 1.4 MB, read by transformers 4.x and 5.x alike
    (path / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)  # 3.5 MB more of the same vocabulary
    _world_readable(path)
    info = dict(
        config=asdict(cfg),
        device=str(device),
        unet=UNET_CONFIG,
        text_encoder=TEXT_CONFIG,
        noise_schedule=NOISE_SCHEDULE,
        sampler=SAMPLER,
        templates=DIGITS_TEMPLATES,
        template_weights=TEMPLATE_WEIGHTS,
        caption_dropout=CAPTION_DROPOUT,
        wall_s=round(wall, 1),
        final_loss=round(loss.item(), 5),
        saved=str(path),
    )
    _record(out, "t2i", info)
    return info


def _digit_names() -> list[str]:
    from ..data import DIGIT_NAMES

    return list(DIGIT_NAMES)


# ---------------------------------------------------------------- step 3: tiny CLIP
def random_affine(
    x: torch.Tensor, g: torch.Generator, deg: float = 10.0, scale: float = 0.1, shift: float = 0.08
) -> torch.Tensor:
    """Per-image random rotation (+-deg), zoom (1 +- scale) and shift (+- shift of the side); black fill."""
    n = len(x)
    u = torch.rand(n, 4, generator=g) * 2 - 1  # (n, 4) in [-1, 1]
    a, s = u[:, 0] * np.deg2rad(deg), 1 + u[:, 1] * scale
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack(
        [torch.stack([cos, -sin, u[:, 2] * 2 * shift], 1), torch.stack([sin, cos, u[:, 3] * 2 * shift], 1)], 1
    )  # (n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (n, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _clip_normalize(x01: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> the tensor open_clip's preprocess makes (ToTensor then Normalize)."""
    return (x01 - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]


def train_clip(cfg: ClipTrainConfig, out: Path = ASSETS, device: str | torch.device = "cpu") -> dict:
    """Contrastive training with a supervised-contrastive target: every same-class pair in the batch counts
    as a positive (probability split evenly), so two "seven"s in one batch are not pushed apart."""
    import open_clip
    from safetensors.torch import save_file

    clip_dir = out / TINY_CLIP_CONFIG.parent.name
    clip_dir.mkdir(parents=True, exist_ok=True)
    config_path = clip_dir / TINY_CLIP_CONFIG.name
    config_path.write_text(json_text(CLIP_MODEL_CONFIG, indent=2) + "\n")
    open_clip.add_model_config(config_path)
    with seeded(cfg.seed):
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    model.to(device)
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
    gray, labels = digit_arrays("train")
    styles = style_words(gray, labels)
    blur_styles = [with_blur(w) for w in styles]
    both = np.concatenate([gray, blurred(gray)])  # (2N, 32, 32): sharp, then blurred
    x = torch.from_numpy(both)[:, None].expand(-1, 3, -1, -1).contiguous()  # (2N, 3, 32, 32) in [0, 1]
    y = torch.from_numpy(labels)
    names = _digit_names()
    with_label = tuple((t, w) for t, w in zip(DIGITS_TEMPLATES, TEMPLATE_WEIGHTS) if "{label}" in t)
    templates, weights = zip(*with_label)  # a caption without the class word has no class to match
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=cfg.lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg.steps))
    g, rng = torch.Generator().manual_seed(cfg.seed), np.random.default_rng(cfg.seed)
    t0, bar = time.time(), _progress(cfg.steps, "train-clip")
    model.train()
    for step in bar:
        idx = torch.randint(len(y), (cfg.batch_size,), generator=g)
        blur = torch.rand(len(idx), generator=g) < BLUR_FRACTION  # (B,) use the blurred variant
        img = _clip_normalize(random_affine(x[idx + blur.long() * len(y)], g))  # (B, 3, 32, 32)
        texts = [
            caption(names[labels[i]], blur_styles[i] if b else styles[i], rng, 0.0, templates, weights)
            for i, b in zip(idx.tolist(), blur.tolist())
        ]
        fi = F.normalize(model.encode_image(img.to(device)), dim=-1)  # (B, D)
        ft = F.normalize(model.encode_text(tokenizer(texts).to(device)), dim=-1)  # (B, D)
        logits = model.logit_scale.exp().clamp(max=100) * fi @ ft.T  # (B, B)
        same = (y[idx][:, None] == y[idx][None, :]).float().to(device)  # (B, B) positives: same class
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (
            torch.sum(-target * logits.log_softmax(1), 1).mean()
            + torch.sum(-target * logits.T.log_softmax(1), 1).mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    wall = time.time() - t0
    model.eval().to("cpu")
    weights_path = clip_dir / TINY_CLIP_WEIGHTS.name
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights_path))
    _world_readable(clip_dir)
    info = dict(
        config=asdict(cfg),
        device=str(device),
        model=CLIP_MODEL_CONFIG,
        wall_s=round(wall, 1),
        final_loss=round(loss.item(), 4),
        logit_scale=round(model.logit_scale.exp().item(), 2),
        saved=str(weights_path),
    )
    _record(out, "clip", info)
    return info


def load_tiny_clip(
    device: str | torch.device = "cpu", config: Path = TINY_CLIP_CONFIG, weights: Path = TINY_CLIP_WEIGHTS
):
    """(model, preprocess, tokenizer) of the shipped tiny CLIP, through open_clip's own loading path."""
    import open_clip

    if not (Path(config).is_file() and Path(weights).is_file()):
        raise FileNotFoundError(
            f"tiny CLIP files missing ({config}, {weights}): run `python -m diffcore.tiny train-clip`"
        )
    open_clip.add_model_config(config)
    model, _, preprocess = open_clip.create_model_and_transforms(
        Path(config).stem, pretrained=str(weights), device=device
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(Path(config).stem)


# ---------------------------------------------------------------- step 4: check
def train_checker(epochs: int, seed: int) -> tuple[DigitsCNN, float]:
    """The CNN trained on the real TRAIN split (random affine jitter), and its accuracy on the real TEST split."""
    gray, labels = digit_arrays("train")
    x, y = torch.from_numpy(gray)[:, None], torch.from_numpy(labels)  # (N, 1, 32, 32), (N,)
    with seeded(seed):
        net = DigitsCNN(10, in_channels=1)  # the embedded classifier, on the grayscale digits
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * (len(x) // 64)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, steps, 50))
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=g)
        loss = F.cross_entropy(net(random_affine(x[idx], g)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    test_gray, test_labels = digit_arrays("test")
    return net.eval(), float((classify(net, test_gray) == test_labels).mean())


@torch.no_grad()
def classify(net: DigitsCNN, gray: np.ndarray) -> np.ndarray:
    """(N,) predicted digit of (N, 32, 32) grayscale images in [0, 1]."""
    return net(torch.from_numpy(gray.astype(np.float32))[:, None]).argmax(1).numpy()


def generated_accuracy(
    pipe, gen, net: DigitsCNN, seed: int, per_class: int, setting: str, template: str, negative: str | None
) -> tuple[dict, np.ndarray]:
    """Fraction of UNFILTERED generated images that the checker labels as the prompted class, and a sample grid.

    Generation goes through diffcore.generate (the embedded profile's code path), one seeded generator per image.
    """
    from ..engine.runtime import derive_seed
    from ..generate import generate_images

    per_class_acc, rows, grays = [], [], []
    for c, name in enumerate(_digit_names()):
        prompts = [template.format(label=name, dataset_type=DIGITS_DATASET_TYPE)] * per_class
        seeds = [derive_seed("tiny-check", seed, setting, c, i) for i in range(per_class)]
        images = generate_images(pipe, prompts, None if negative is None else [negative] * per_class, seeds, gen)
        gray = images[..., 0].astype(np.float32) / 255.0  # (n, 32, 32); the model draws grey (R = G = B)
        per_class_acc.append(float((classify(net, gray) == c).mean()))
        grays.append(gray)
        rows.append(np.concatenate(list(images[:10]), axis=1))  # (32, 320, 3)
    result = dict(
        prompt=template,
        negative_prompt=negative,
        guidance_scale=gen.guidance_scale,
        accuracy=round(float(np.mean(per_class_acc)), 4),
        per_class={n: round(a, 3) for n, a in zip(_digit_names(), per_class_acc)},
        style=style_summary(np.concatenate(grays)),
    )
    return result, np.concatenate(rows, axis=0)  # (320, 320, 3): 10 samples per digit


def style_summary(gray: np.ndarray) -> dict:
    """What the negative prompt's words measure, averaged over images: ink area (thin), ink brightness (faint),
    share with broken strokes (see image_measures)."""
    m = image_measures(gray)
    return dict(
        ink_area=round(float(m["area"].mean()), 4),
        ink_brightness=round(float(m["bright"].mean()), 4),
        broken_share=round(float((m["pieces"] > 1).mean()), 4),
    )


@torch.no_grad()
def clip_zero_shot(config: Path = TINY_CLIP_CONFIG, weights: Path = TINY_CLIP_WEIGHTS) -> dict:
    """Tiny CLIP zero-shot accuracy on the real TEST digits, text prompts CLIP_ZERO_SHOT_TEMPLATE."""
    from ..data import digits

    model, preprocess, tokenizer = load_tiny_clip("cpu", config, weights)
    ds = digits("test")
    names = _digit_names()
    text = F.normalize(model.encode_text(tokenizer([CLIP_ZERO_SHOT_TEMPLATE.format(label=n) for n in names])), dim=-1)
    x = torch.stack([preprocess(ds.load(i)) for i in range(len(ds))])  # (N, 3, 32, 32), open_clip's own transform
    img = F.normalize(model.encode_image(x), dim=-1)  # (N, D)
    pred = (img @ text.T).argmax(1).numpy()  # (N,)
    return dict(
        prompt=CLIP_ZERO_SHOT_TEMPLATE, accuracy=round(float((pred == np.asarray(ds.labels)).mean()), 4), n_test=len(ds)
    )


def asset_megabytes(root: Path = ASSETS) -> float:
    """Size of all shipped weight files (*.safetensors) under `root`, in MB (1e6 bytes)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*.safetensors")) / 1e6


def check(cfg: CheckConfig, out: Path = ASSETS, device: str | torch.device = "cpu") -> dict:
    """Measure the shipped models on held-out data and write <out>/tiny-quality.json (and tiny-samples.png)."""
    from dataclasses import replace

    from PIL import Image

    from ..generate import GenerateConfig, load_pipeline

    t0 = time.time()
    net, real_acc = train_checker(cfg.classifier_epochs, cfg.seed)
    gen = GenerateConfig(
        model=str(out / TINY_T2I_DIR.name),
        steps=cfg.steps,
        guidance_scale=cfg.guidance_scale,
        size=32,
        batch_size=cfg.per_class,
        dtype="float32",
    )
    pipe = load_pipeline(gen, torch.device(device), torch.float32)  # image seeds stay on CPU generators
    run = dict(net=net, seed=cfg.seed, per_class=cfg.per_class)
    contextual, grid = generated_accuracy(
        pipe, gen, setting="contextual", template=PAPER_TEMPLATE, negative=DIGITS_NEGATIVE_PROMPT, **run
    )
    plain, _ = generated_accuracy(pipe, gen, setting="plain", template="{label}", negative=None, **run)
    no_negative, _ = generated_accuracy(
        pipe, gen, setting="contextual", template=PAPER_TEMPLATE, negative=None, **run
    )  # same seeds as `contextual`: isolates the negative prompt's effect
    sweep = [
        generated_accuracy(
            pipe,
            replace(gen, guidance_scale=w),
            setting="contextual",
            template=PAPER_TEMPLATE,
            negative=DIGITS_NEGATIVE_PROMPT,
            **run,
        )[0]["accuracy"]
        for w in cfg.sweep
    ]
    Image.fromarray(grid).save(out / "tiny-samples.png")  # the contextual setting, 10 per digit, one row per digit
    clip_dir = out / TINY_CLIP_CONFIG.parent.name
    clip = clip_zero_shot(clip_dir / TINY_CLIP_CONFIG.name, clip_dir / TINY_CLIP_WEIGHTS.name)
    report = {
        "command": "python -m diffcore.tiny " + " ".join(sys.argv[1:]),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "note": "tiny stand-in models trained by diffcore on the digits train split; not the paper's models",
        "config": asdict(cfg),
        "checker": {
            "model": "DigitsCNN: conv 32-64-128 (BN, ReLU, 2x2 max-pool each), global average pool, linear; "
            "trained on the 898 real train-split digits, 32x32 grayscale, random affine jitter",
            "real_test_accuracy": round(real_acc, 4),
            "n_test": 899,
        },
        "generated": {
            "n_per_class": cfg.per_class,
            "steps": cfg.steps,
            "sampler": type(pipe.scheduler).__name__,
            "filtered": False,
            "contextual": contextual,
            "plain": plain,
            "contextual_without_negative": no_negative,
            "contextual_accuracy_by_guidance": dict(zip(map(str, cfg.sweep), sweep)),
        },
        "real_test_style": style_summary(digit_arrays("test")[0]),
        "clip_zero_shot": clip,
        "weights_mb": round(asset_megabytes(out), 2),
        "targets": {"generated_contextual_accuracy": 0.8, "clip_zero_shot_accuracy": 0.8},
        "wall_s": round(time.time() - t0, 1),
    }
    (out / QUALITY_JSON.name).write_text(json_text(report, indent=2) + "\n")
    return report


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffcore.tiny", description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["train-vae", "train-t2i", "train-clip", "check"])
    p.add_argument("--out", type=Path, default=ASSETS, help="assets folder to read and write (default: the package's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="optimisation steps (train-*) or denoising steps (check)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N: where the models train / draw")
    p.add_argument("--guidance-scale", type=finite_float, help="check only: w of Eq. (4), default %(default)s")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # these models never come from a hub
    # Set here, never at import. 2 = the reference machine's cores; when other torch jobs share those cores, use 1:
    # two 2-thread jobs on 2 cores ran 10-50x slower per step (OpenMP threads wait on descheduled peers; measured).
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    over = {"seed": args.seed, **({"steps": args.steps} if args.steps is not None else {})}
    if args.step == "train-vae":
        info = train_vae(VaeTrainConfig(**over), args.out, args.device)
    elif args.step == "train-t2i":
        info = train_t2i(T2ITrainConfig(**over), args.out, args.device)
    elif args.step == "train-clip":
        info = train_clip(ClipTrainConfig(**over), args.out, args.device)
    else:
        if args.guidance_scale is not None:
            over["guidance_scale"] = args.guidance_scale
        info = check(CheckConfig(**over), args.out, args.device)
    print(json_text(info, indent=2))
    return 0
