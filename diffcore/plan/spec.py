"""The paper's setup, transcribed: per table, what the paper states, and where it is silent, what the source the kit
follows states, each value with its citation. Nothing here is read by the code that runs experiments: the plan
(plan/jobs.py) is built from the profiles, the tables' setups and the configs' defaults, and a test compares the
paper profile's plan with this spec field by field, so a change that moves what runs away from the paper fails CI.

Sources, cited by these short names:
    paper        the paper (`shared/paper/diffcore-mix-paper.txt`), with section / table / figure
    GuidedMixup  3neutronstar/GuidedMixup@2a09e97 (Kang & Kim, AAAI 2023): FGVC/main.py, FGVC/DataLoad/data_load.py,
                 FGVC/scripts/fgvc/*.sh: the fine-grained and data-scarcity protocol the paper follows (Sec. 5)
    SnapMix      Shaoli-Huang/SnapMix@0d2e714 (Huang et al., AAAI 2021): config/comm.yml, utils/conf.py,
                 datasets/tfs.py: the fine-grained fine-tuning protocol of the mixing literature
    torchvision  the standard ImageNet recipe (pytorch/examples imagenet/main.py), RandomResizedCrop(224) + flip
"""

from __future__ import annotations

from typing import NamedTuple


class Cited(NamedTuple):
    value: object
    source: str


# The recipe the paper states once for its experiments (Sec. 4, Implementation Details).
PAPER_RECIPE = {
    "epochs": Cited(300, "paper Sec. 4: 'trained for 300 epochs'"),
    "batch_size": Cited(16, "paper Sec. 4: 'We set the batch size to 16'"),
    "optimizer": Cited("sgd", "paper Sec. 4: 'SGD optimizer'"),
    "lr": Cited(0.01, "paper Sec. 4: 'initial learning rate was set to 0.01'"),
    "momentum": Cited(0.9, "paper Sec. 4: 'momentum of 0.9'"),
    "weight_decay": Cited(5e-4, "paper Sec. 4: 'weight decay of 5x10^-4'"),
    "lr_steps": Cited((150, 225), "paper Sec. 4: 'decayed by a factor of 0.1 at epochs 150 and 225'"),
    "lr_decay": Cited(0.1, "paper Sec. 4"),
    "nesterov": Cited(
        True,
        "paper silent; GuidedMixup FGVC/main.py --nesterov default True (its recipe is the "
        "paper's to the digit: lr 0.01, wd 5e-4, steps 150/225, 300 epochs, batch 16)",
    ),
}
FGVC_AUGMENT = Cited(
    "resize-crop",
    "paper silent; GuidedMixup FGVC/DataLoad/data_load.py: Resize(256), "
    "RandomCrop(224), RandomHorizontalFlip; test: Resize(256), CenterCrop(224)",
)

# Per table: the datasets (our column label -> dataset, splits), network, input size, pretrained or not,
# augmentation, the recipe (PAPER_RECIPE unless a field says otherwise), the methods of its rows, the metrics.
TABLES: dict[str, dict] = {
    "Table 2": {
        "task": "data scarcity: 10 training images per class",
        "columns": {
            "Flowers-102, 10 per class": {
                "dataset": Cited("flowers102", "paper Table 2 caption"),
                "few_shot": Cited(
                    10, "paper Sec. 5 Data Scarcity: 'using 10 images per class' (the official train split)"
                ),
                "eval_splits": Cited(("val", "test"), "paper Table 2: 'Valid Set (%)', 'Test Set (%)'"),
            }
        },
        "network": Cited("preactresnet34", "paper Table 2 caption: 'PreAct-ResNet34 backbone'"),
        "input_size": Cited(224, "paper silent; GuidedMixup data_load.py: crop 224 for flowers102"),
        "pretrained": Cited(False, "paper: only Table 5 is fine-tuned"),
        "augment": FGVC_AUGMENT,
        "metrics": Cited(("valid_top1", "test_top1"), "paper Table 2"),
    },
    "Table 3": {
        "task": "general classification",
        "columns": {
            "ImageNet-1K": {
                "dataset": Cited("imagenet-1k", "paper Table 3"),
                "network": Cited("resnet50", "paper Table 3 caption: 'ResNet-50 is used as the backbone'"),
                "input_size": Cited(224, "torchvision ImageNet recipe"),
                "augment": Cited(
                    "imagenet", "paper silent; torchvision ImageNet recipe: RandomResizedCrop(224) + flip"
                ),
            },
            "Tiny ImageNet-200": {
                "dataset": Cited("tiny-imagenet-200", "paper Table 3"),
                "network": Cited("preactresnet18", "paper Table 3 caption"),
                "input_size": Cited(64, "paper Sec. 4: 'a 64x64 image size dataset'"),
                "augment": Cited(
                    "small", "paper silent; GuidedMixup data_load.py tiny-imagenet: RandomCrop(64, 4) + flip"
                ),
            },
            "CIFAR-100": {
                "dataset": Cited("cifar100", "paper Table 3"),
                "network": Cited("preactresnet18", "paper Table 3 caption"),
                "input_size": Cited(32, "paper Sec. 4: 'a 32x32 image size dataset'"),
                "augment": Cited(
                    "small", "paper silent; GuidedMixup data_load.py cifar100: Pad(4), RandomCrop(32) + flip"
                ),
            },
        },
        "pretrained": Cited(False, "paper: only Table 5 is fine-tuned"),
        "metrics": Cited(("top1", "top5"), "paper Table 3"),
    },
    "Table 4": {
        "task": "fine-grained classification",
        "columns": {
            "CUB": {"dataset": Cited("cub-200-2011", "paper Table 4")},
            "Cars": {"dataset": Cited("stanford-cars", "paper Table 4")},
            "Caltech": {
                "dataset": Cited(
                    "caltech101",
                    "paper Table 4; split: GuidedMixup's stratified 80/20, seed 1 (FGVC/README.md, data_load.py)",
                )
            },
        },
        "network": Cited("densenet121", "paper Table 4 caption: 'using DenseNet121'"),
        "input_size": Cited(224, "paper silent; GuidedMixup data_load.py: crop 224 (fgvc_resize off)"),
        "pretrained": Cited(False, "paper: only Table 5 is fine-tuned"),
        "augment": FGVC_AUGMENT,
        "metrics": Cited(("top1",), "paper Table 4"),
    },
    "Table 5": {
        "task": "fine-tuning an ImageNet-pretrained network",
        "columns": {
            "CUB-Birds": {"dataset": Cited("cub-200-2011", "paper Table 5")},
            "Flowers-102": {"dataset": Cited("flowers102", "paper Table 5")},
        },
        "network": Cited("wide_resnet101_2", "paper Table 5 caption: 'ImageNet pre-trained Wide ResNet-101'"),
        "input_size": Cited(224, "paper silent; SnapMix datasets/tfs.py at crop 224: Resize(256) + RandomCrop(224)"),
        "pretrained": Cited(
            "imagenet",
            "paper Sec. 5 Transfer Learning: 'pre-trained on ImageNet-1K'; torchvision "
            "Wide_ResNet101_2_Weights.IMAGENET1K_V1 as a local file",
        ),
        "pretrained_lr_scale": Cited(
            0.1,
            "paper silent on per-layer rates; SnapMix config/comm.yml: lr_group "
            "[0.001, 0.01] for the pretrained layers and the new classifier",
        ),
        "augment": Cited(
            "resize-crop",
            "paper silent; SnapMix datasets/tfs.py (CUB, no warp): Resize(256), RandomCrop(224), RandomHorizontalFlip",
        ),
        "metrics": Cited(("top1",), "paper Table 5"),
    },
    "Table 7": {
        "task": "ablation of the mixing strategies",
        "columns": {"Stanford Cars": {"dataset": Cited("stanford-cars", "paper Table 7 caption")}},
        "network": Cited("resnet50", "paper Sec. 6: 'All ablation studies are conducted using ResNet-50'"),
        "input_size": Cited(224, "paper silent; GuidedMixup data_load.py cars196: crop 224"),
        "pretrained": Cited(False, "paper: only Table 5 is fine-tuned"),
        "augment": FGVC_AUGMENT,
        "metrics": Cited(("top1", "top5"), "paper Table 7"),
    },
}

# The generated set every DiffCoRe-Mix row trains with: -50 and -100 take the same set (seeds do not depend on the
# fraction, so the -50 pairs are a subset of the -100 pairs), generated at the authors' settings.
GENERATION = {
    "model": Cited("cosxl", "paper Sec. 4 footnote 1: huggingface.co/stabilityai/cosxl"),
    "scheduler": Cited(
        "edm-euler-vpred",
        "paper silent; the authors' generation code (khawar-islam/DiffCoRe-Mix): "
        "EDMEulerScheduler, v-prediction, exponential sigmas",
    ),
    "steps": Cited(50, "the authors' generation code"),
    "guidance_scale": Cited(12.0, "the authors' generation code"),
    "size": Cited(512, "paper Fig. 7: '512x512 augmentation samples'; the authors' code"),
    "template": Cited("Generate heavy snow to the {label}, a {dataset_type} object", "paper Sec. 4, verbatim"),
    "fractions": Cited((0.5, 1.0), "paper Sec. 5: '-50 augments 50% ... -100 augments 100% training data'"),
    "negative_prompt": Cited(
        "per dataset type, never naming a class of the dataset",
        "paper Sec. 4: 'The negative prompts varied depending on the dataset type'",
    ),
}

# The comparison methods' hyperparameters per table and dataset, by the paper's row label: the protocol each table's
# numbers come from (Tables 2 and 4: GuidedMixup's FGVC code; Table 3: the PuzzleMix / Co-Mixup / GuidedMixup /
# AugMix / PixMix / CutMix releases per dataset; Table 5: SnapMix's fine-tuning runs). Values that equal a method's
# own default are listed too: the test checks what runs, not what was overridden.
GM = "GuidedMixup@2a09e97"
PZ = "snu-mllab/PuzzleMix@e2dbf3a"
CO = "snu-mllab/Co-Mixup@2a76816"
_FGVC = {
    "Mixup": {
        "alpha": Cited(0.2, f"{GM} FGVC/main.py --alpha help 'mixup:0.2' (its code default: 1.0)"),
        "prob": Cited(1.0, f"{GM} FGVC/main.py --mix_prob default"),
    },
    "CutMix": {"alpha": Cited(1.0, f"{GM} FGVC/main.py --alpha"), "prob": Cited(1.0, f"{GM} FGVC/main.py --mix_prob")},
    "SaliencyMix": {
        "beta": Cited(1.0, f"{GM} FGVC/main.py --alpha"),
        "prob": Cited(1.0, f"{GM} FGVC/main.py --mix_prob"),
    },
    "PuzzleMix": {
        "alpha": Cited(1.0, f"{GM} FGVC/main.py --alpha"),
        "n_labels": Cited(3, f"{GM} FGVC/Utils/puzzlemix_augmentation/puzzlemix_parser.py"),
        "neigh_size": Cited(4, f"{GM} puzzlemix_parser.py"),
        "beta": Cited(1.2, f"{GM} puzzlemix_parser.py"),
        "gamma": Cited(0.5, f"{GM} puzzlemix_parser.py"),
        "eta": Cited(0.2, f"{GM} puzzlemix_parser.py"),
        "transport": Cited(True, f"{GM} puzzlemix_parser.py"),
        "t_eps": Cited(0.8, f"{GM} puzzlemix_parser.py"),
        "clean_lam": Cited(1.0, f"{GM} puzzlemix_parser.py clean_lam default 1 (PuzzleMix's CIFAR: 0)"),
    },
    "Co-Mixup": {
        "alpha": Cited(
            1.0,
            f"{GM} FGVC/main.py --alpha default, which its Utils/comixup_augmentation/"
            f"mixup.py reads (Co-Mixup's own runs: 2.0)",
        ),
        "part": Cited(20, f"{GM} FGVC/Utils/comixup_augmentation/comixup_parser.py m_part"),
        "block_num": Cited(4, f"{GM} comixup_parser.py m_block_num"),
        "beta": Cited(0.32, f"{GM} comixup_parser.py"),
        "thres": Cited(0.83, f"{GM} comixup_parser.py"),
        "clean_lam": Cited(1.0, f"{GM} comixup_parser.py"),
    },
    "Guided-AP": {
        "pairing": Cited("greedy", f"{GM} FGVC/README.md: --condition greedy --mix_prob 0.8"),
        "prob": Cited(0.8, f"{GM} FGVC/README.md"),
        "clean_lam": Cited(0.0, f"{GM} FGVC/Utils/guidedmixup_augmentation/guidedmixup_parser.py"),
    },
    "DiffuseMix": {"fractal_alpha": Cited(0.2, "khawar-islam/diffuseMix augment/utils.py blend alpha=0.20")},
}
_SNAPMIX = {
    "Mixup": {
        "alpha": Cited(1.0, "Shaoli-Huang/SnapMix utils/conf.py --beta default"),
        "prob": Cited(0.5, "SnapMix README.md: --mixmethod mixup --prob 0.5"),
    },
    "CutMix": {
        "alpha": Cited(3.0, "SnapMix README.md: --mixmethod cutmix --beta 3"),
        "prob": Cited(1.0, "SnapMix utils/conf.py --prob default"),
    },
    "SaliencyMix": {
        "beta": Cited(1.0, "no fine-tuning value published; SaliencyMix's ImageNet setting (README)"),
        "prob": Cited(1.0, "SaliencyMix README (ImageNet)"),
    },
    "SnapMix": {
        "beta": Cited(5.0, "SnapMix README.md: --mixmethod snapmix --beta 5"),
        "prob": Cited(1.0, "SnapMix README.md: 'prob=1., beta=5 ... in most of the experiments'"),
    },
    "DiffuseMix": _FGVC["DiffuseMix"],
}
METHODS: dict[str, dict[str, dict[str, dict[str, Cited]]]] = {
    "Table 2": {"flowers102": _FGVC},
    "Table 3": {
        "cifar100": {
            "Mixup": {"alpha": Cited(1.0, f"{PZ} README.md (CIFAR-100 mixup)")},
            "Manifold Mixup": {"alpha": Cited(2.0, f"{PZ} README.md (CIFAR-100 manifold mixup)")},
            "CutMix": {
                "alpha": Cited(1.0, f"{PZ} README.md --mixup_alpha 1.0 --box True"),
                "prob": Cited(1.0, f"{PZ} README.md: every batch"),
            },
            "AugMix": {
                "severity": Cited(3.0, "google-research/augmix cifar.py"),
                "width": Cited(3, "augmix cifar.py"),
                "jsd": Cited(True, "augmix cifar.py"),
            },
            "PixMix": {
                "k": Cited(4, "andyzoujm/pixmix cifar.py"),
                "beta": Cited(3.0, "pixmix cifar.py"),
                "severity": Cited(3.0, "pixmix cifar.py"),
            },
            "PuzzleMix": {
                "alpha": Cited(1.0, f"{PZ} README.md"),
                "beta": Cited(1.2, f"{PZ} README.md"),
                "neigh_size": Cited(4, f"{PZ} README.md"),
                "t_size": Cited(4, f"{PZ} README.md --t_size 4"),
                "clean_lam": Cited(0.0, f"{PZ} main.py default"),
            },
            "GuidedMixup": {
                "pairing": Cited("greedy", f"{GM} README.md (CIFAR-100 guided-ap)"),
                "prob": Cited(0.8, f"{GM} README.md"),
                "clean_lam": Cited(0.0, f"{GM} main.py default"),
            },
            "Co-Mixup": {
                "alpha": Cited(2.0, f"{CO} README.md (CIFAR-100)"),
                "part": Cited(20, f"{CO} main.py"),
                "niter": Cited(4, f"{CO} main.py"),
            },
        },
        "tiny-imagenet-200": {
            "Mixup": {"alpha": Cited(0.2, f"{PZ} README.md (Tiny-ImageNet mixup)")},
            "Manifold Mixup": {"alpha": Cited(0.2, f"{PZ} README.md (Tiny-ImageNet manifold mixup)")},
            "CutMix": {"alpha": Cited(0.2, f"{PZ} README.md (Tiny-ImageNet cutmix)")},
            "AugMix": {"severity": Cited(3.0, "no Tiny-ImageNet value published; augmix cifar.py (nearest)")},
            "PuzzleMix": {
                "alpha": Cited(1.0, f"{PZ} README.md (Tiny)"),
                "clean_lam": Cited(1.0, f"{PZ} README.md (Tiny)"),
            },
            "GuidedMixup": {
                "pairing": Cited("greedy", f"{GM} README.md (Tiny guided-ap)"),
                "prob": Cited(0.8, f"{GM} README.md"),
                "clean_lam": Cited(1.0, f"{GM} README.md (Tiny)"),
            },
            "Co-Mixup": {"alpha": Cited(2.0, f"{CO} README.md (Tiny-ImageNet)"), "part": Cited(20, f"{CO} main.py")},
        },
        "imagenet-1k": {
            "Mixup": {"alpha": Cited(0.2, "no released ImageNet code; the mixup paper's ImageNet range 0.1-0.4")},
            "AugMix": {
                "severity": Cited(1.0, "google-research/augmix imagenet.py --aug-severity 1"),
                "width": Cited(3, "augmix imagenet.py"),
            },
            "CutMix": {
                "alpha": Cited(1.0, "clovaai/CutMix-PyTorch README.md (ImageNet)"),
                "prob": Cited(1.0, "CutMix README.md (ImageNet)"),
            },
            "PixMix": {
                "k": Cited(4, "andyzoujm/pixmix imagenet.py"),
                "beta": Cited(4.0, "pixmix imagenet.py"),
                "severity": Cited(1.0, "pixmix imagenet.py"),
            },
            "PuzzleMix": {
                "beta": Cited(1.5, f"{PZ} imagenet_fast/configs/puzzlemix/configs_fast_phase*.yml"),
                "neigh_size": Cited(2, f"{PZ} imagenet_fast/lib/utils.py get_mask default"),
                "clean_lam": Cited(
                    1.0,
                    f"{PZ} imagenet_fast configs: 1 in phases 1-2 (0 in the last 60 of "
                    f"100 epochs; one value for the whole run here)",
                ),
            },
            "Co-Mixup": {
                "part": Cited(16, f"{CO} comix-imagenet/lib/utils.py (hard-coded)"),
                "niter": Cited(3, f"{CO} comix-imagenet/lib/utils.py (hard-coded)"),
            },
        },
    },
    "Table 4": {d: _FGVC for d in ("cub-200-2011", "stanford-cars", "caltech101")},
    "Table 5": {d: _SNAPMIX for d in ("cub-200-2011", "flowers102")},
}
