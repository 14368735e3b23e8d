"""Contextual prompt P_c and negative prompt P_n (paper Sec. 3, Eq. 4).

The paper's initial prompt (Sec. 4, Implementation Details) is the default template. "The negative prompts varied
depending on the dataset type" (Sec. 4): only one list was published, the authors' (their generation code, written
for an aircraft dataset). It names cars, buses, trains, trees, people and roads, which are classes (or words of
classes) of Stanford Cars, CIFAR-100, ImageNet and CUB, and Eq. (4) steers each generated image away from its
negative prompt: a car's counterpart would be steered away from cars. So each dataset type has its own list, and
at run time, before any model loads, every phrase of the default list that shares a word with a class name of the
dataset (or with its dataset-type word) is dropped, with one logged line each (`final_negative`); a negative prompt
the user passes that names a class is refused unless `allow_class_words` says it is meant.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .engine.checks import check_fields

PAPER_TEMPLATE = "Generate heavy snow to the {label}, a {dataset_type} object"  # paper Sec. 4, verbatim

log = logging.getLogger(__name__)

# khawar-islam/DiffCoRe-Mix generation code, verbatim (the paper only says "varied depending on the dataset type").
AUTHORS_NEGATIVE_PROMPT = (
    "train, car, newspaper, sunlight, people, human, tree, cityscape, road, landscape, bus, building, desk, "
    "computer, paper texture, windows, streets, rails, traffic, sky, road lines, traffic lights"
)

# Negative prompt per dataset type. Only "aircraft" is the authors' (verbatim). The others are ours: the authors'
# idea (steer away from man-made clutter and scene context) without any word that names, or is part of, the
# subject of the dataset type; "natural" (datasets where any object can be a class: ImageNet, CIFAR-100,
# Tiny-ImageNet, Caltech-101) names no object at all, only image defects. "digits" is for the embedded profile:
# the tiny T2I model was trained with stroke-style words in its captions (diffcore.tiny).
NEGATIVE_PROMPTS = {
    "aircraft": AUTHORS_NEGATIVE_PROMPT,
    "natural": "blurry, low quality, distorted, deformed, watermark, text, cartoon, drawing",
    "bird": "people, human, car, bus, train, newspaper, building, cityscape, road, computer, paper texture, text, "
    "watermark",
    "flower": "people, human, car, bus, train, newspaper, building, cityscape, road, computer, paper texture, text, "
    "watermark",
    "car": "people, human, newspaper, desk, computer, paper texture, building, text, watermark",
    "digits": "thin, faint, broken strokes, blurry",
}
# Which list a dataset takes (any other dataset: "natural").
NEGATIVE_KEYS = {"digits": "digits", "cub-200-2011": "bird", "flowers102": "flower", "stanford-cars": "car"}

# What <dataset_type> becomes in the template, per dataset type / paper dataset.
DATASET_TYPE_WORDS = {
    "digits": "handwritten digit",
    "cifar100": "natural",
    "tiny-imagenet-200": "natural",
    "imagenet-1k": "natural",
    "flowers102": "flower",
    "cub-200-2011": "bird",
    "stanford-cars": "car",
    "caltech101": "natural",
}


@dataclass(frozen=True)
class PromptConfig:
    template: str = PAPER_TEMPLATE  # str.format template with {label} and optionally {dataset_type}
    dataset_type: str = "natural"  # word for {dataset_type}; see DATASET_TYPE_WORDS
    negative_prompt: str | None = None  # None -> NEGATIVE_PROMPTS[negative_key]; "" -> no negative prompt
    negative_key: str = "natural"  # which entry of NEGATIVE_PROMPTS the default comes from
    allow_class_words: bool = False  # a negative_prompt naming a class of the dataset is refused unless this is set

    def __post_init__(self):
        check_fields(self)  # types, finite numbers (engine.checks)
        if "{label}" not in self.template:
            raise ValueError(f"prompt template={self.template!r} has no {{label}} placeholder; e.g. {PAPER_TEMPLATE!r}")
        try:
            self.template.format(label="x", dataset_type="y")
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:  # {x}, {0}, {label[a]}, {label.x}
            raise ValueError(
                f"prompt template={self.template!r}: only {{label}} and {{dataset_type}} are allowed ({e})"
            ) from None
        if self.negative_prompt is None and self.negative_key not in NEGATIVE_PROMPTS:
            raise ValueError(f"negative_key={self.negative_key!r}: expected one of {sorted(NEGATIVE_PROMPTS)}")


def label_words(class_name: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross': what a text encoder should read."""
    name = class_name.split(".", 1)[1] if class_name[:3].isdigit() and "." in class_name[:5] else class_name
    return " ".join(name.replace("_", " ").split())


def contextual_prompt(class_name: str, cfg: PromptConfig) -> str:
    """P_c for one class."""
    return cfg.template.format(label=label_words(class_name), dataset_type=cfg.dataset_type)


def negative_prompt(cfg: PromptConfig) -> str:
    """P_n ('' means none: the pipeline then uses its unconditional embedding, Eq. 3 instead of Eq. 4)."""
    return NEGATIVE_PROMPTS[cfg.negative_key] if cfg.negative_prompt is None else cfg.negative_prompt


def negative_key_for(dataset: str) -> str:
    """The NEGATIVE_PROMPTS entry of a dataset (its type)."""
    return NEGATIVE_KEYS.get(dataset, "natural")


def words(text: str) -> set[str]:
    """Lower-case words, plurals folded ('Traffic lights' -> {'traffic', 'light'})."""
    return {
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
        for w in re.findall(r"[a-z0-9]+", text.lower())
    }


def class_conflicts(negative: str, class_names, dataset_type: str = "") -> list[tuple[str, str]]:
    """(phrase of the negative prompt, the class it names) for every comma-separated phrase sharing a word with a
    class name (as the prompt writes it) or with the dataset-type word of P_c."""
    named = [(words(label_words(c)), c) for c in class_names]
    named.append((words(dataset_type), f"dataset type {dataset_type!r}"))
    out = []
    for phrase in (p.strip() for p in negative.split(",")):
        hit = next((c for w, c in named if w & words(phrase)), None) if phrase else None
        if hit is not None:
            out.append((phrase, hit))
    return out


def final_negative(cfg: PromptConfig, class_names) -> tuple[str, list[tuple[str, str]]]:
    """(P_n for a dataset with these classes, the default's phrases dropped as [(phrase, class)]).

    The default list loses every phrase that names a class; a negative prompt the user gave is kept as given, or
    refused in one line when it names a class, unless cfg.allow_class_words."""
    if cfg.negative_prompt is not None:
        conflicts = [] if cfg.allow_class_words else class_conflicts(cfg.negative_prompt, class_names, cfg.dataset_type)
        if conflicts:
            phrase, name = conflicts[0]
            raise ValueError(
                f"negative_prompt names {name!r} ({phrase!r}): through Eq. (4) it would steer that class "
                f"away from itself; drop the word, or pass --allow-class-words if it is meant"
            )
        return cfg.negative_prompt, []
    default = NEGATIVE_PROMPTS[cfg.negative_key]
    dropped = class_conflicts(default, class_names, cfg.dataset_type)
    gone = {p for p, _ in dropped}
    return ", ".join(p.strip() for p in default.split(",") if p.strip() and p.strip() not in gone), dropped


def log_dropped(dropped: list[tuple[str, str]]) -> None:
    for phrase, name in dropped:
        log.info("negative prompt: dropped %r, it names the class %r", phrase, name)
