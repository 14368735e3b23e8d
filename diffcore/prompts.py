"""Contextual prompt P_c and negative prompt P_n (paper Sec. 3, Eq. 4).

The paper's initial prompt (Sec. 4, Implementation Details) is the default template. The negative prompt for
natural-image datasets is the authors' one, verbatim from their public generation code (REFERENCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from .engine.checks import check_fields

PAPER_TEMPLATE = "Generate heavy snow to the {label}, a {dataset_type} object"  # paper Sec. 4, verbatim

# khawar-islam/DiffCoRe-Mix generation code, verbatim (the paper only says "varied depending on the dataset type").
AUTHORS_NEGATIVE_PROMPT = (
    "train, car, newspaper, sunlight, people, human, tree, cityscape, road, landscape, bus, building, desk, "
    "computer, paper texture, windows, streets, rails, traffic, sky, road lines, traffic lights"
)

# Negative prompt per dataset type. "digits" is ours, for the embedded profile: the tiny T2I model was trained
# with stroke-style words in its captions (diffcore.tiny), so these words steer it away from weak strokes.
NEGATIVE_PROMPTS = {
    "natural": AUTHORS_NEGATIVE_PROMPT,
    "digits": "thin, faint, broken strokes, blurry",
}

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
