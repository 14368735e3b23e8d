"""Datasets: the bundled digits, ImageFolder trees, and the paper's datasets read from local roots.

Every dataset is exposed as an `ImageSet`: class names, a stable id per image (the seed of its generated
counterpart derives from it), integer labels, and a loader returning an RGB PIL image. Nothing downloads.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .engine.images import MAX_IMAGE_PIXELS, load_rgb, open_checked, to_rgb  # noqa: F401  (data.load_rgb: the one image reader)
from .prompts import label_words

log = logging.getLogger(__name__)

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_SPLIT_SEED = 0  # fixed: the shipped tiny models were trained on this train split only
DIGITS_TRAIN_FRACTION = 0.5  # 1797 images -> 898 train / 899 test, stratified by class
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """A labelled image collection. `ids[i]` is unique and stable across runs and machines."""

    name: str
    classes: list[str]
    ids: list[str]
    labels: list[int]
    loader: Callable[[int], Image.Image] = field(repr=False)
    paths: list[str | None] | None = field(default=None, repr=False)
    dataset_type: str = "natural"  # selects the negative prompt, see prompts.NEGATIVE_PROMPTS
    skipped: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (file or class folder, why)

    def __post_init__(self):
        if not (len(self.ids) == len(self.labels)):
            raise ValueError(f"{self.name}: {len(self.ids)} ids but {len(self.labels)} labels")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"{self.name}: image ids are not unique")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> Image.Image:
        return self.loader(i)

    def path(self, i: int) -> str | None:
        return None if self.paths is None else self.paths[i]

    def subset(self, indices: Sequence[int], name: str | None = None) -> ImageSet:
        idx = [int(i) for i in indices]
        return ImageSet(
            name or self.name,
            self.classes,
            [self.ids[i] for i in idx],
            [self.labels[i] for i in idx],
            loader=lambda j, _l=self.loader, _idx=idx: _l(_idx[j]),
            paths=None if self.paths is None else [self.paths[i] for i in idx],
            dataset_type=self.dataset_type,
            skipped=list(self.skipped),
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes))


# ---------------------------------------------------------------- the bundled digits (scikit-learn)
def _digits_arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (N, size, size, 3) uint8, bright ink on black, and (N,) labels."""
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    d = load_digits()
    gray = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    up = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BICUBIC)) for g in gray])  # (N, s, s)
    rgb = np.repeat(up[..., None], 3, axis=-1)  # (N, s, s, 3)
    return rgb, d.target.astype(np.int64)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train/test split of the 1797 digits (seed DIGITS_SPLIT_SEED)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    idx = np.arange(len(y))
    train, test = train_test_split(idx, train_size=DIGITS_TRAIN_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return np.sort(train), np.sort(test)


def digits(split: str = "train", size: int = 32) -> ImageSet:
    """scikit-learn's handwritten digits (real 8x8 scans), upsampled to `size` and made RGB."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"digits split={split!r}: expected 'train', 'test' or 'all'")
    rgb, y = _digits_arrays(size)
    train, test = digits_split_indices()
    idx = {"train": train, "test": test, "all": np.arange(len(y))}[split]
    images = rgb[idx]
    return ImageSet(
        f"digits-{split}",
        list(DIGIT_NAMES),
        [f"digits/{int(i):04d}" for i in idx],
        [int(v) for v in y[idx]],
        loader=lambda j: Image.fromarray(images[j]),
        dataset_type="digits",
    )


# ---------------------------------------------------------------- subsets
def few_shot(ds: ImageSet, k: int, seed: int) -> ImageSet:
    """k images per class, chosen with `seed` (Table 2: 10 images per class). Fails if a class has < k."""
    if k < 1:
        raise ValueError(f"few-shot k={k}: expected an integer >= 1")
    counts = ds.class_counts()
    short = [ds.classes[c] for c in range(len(ds.classes)) if counts[c] < k]
    if short:
        raise ValueError(f"few-shot k={k}: classes {short[:5]} have fewer than {k} images in {ds.name}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds.labels)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in range(len(ds.classes))]
    return ds.subset(np.sort(np.concatenate(chosen)), name=f"{ds.name}-{k}shot")


def choose_fraction(ds: ImageSet, fraction: float, seed: int) -> np.ndarray:
    """Indices of the images that get a generative counterpart: `fraction` of each class (at least one).

    DiffCoRe-Mix-50 / -100 = fraction 0.5 / 1.0. Per class, so that no class is left without counterparts.
    """
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction}: expected a value in (0, 1], e.g. 0.5 for DiffCoRe-Mix-50")
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds.labels)
    chosen = []
    for c in range(len(ds.classes)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        n = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------- image files and ImageFolder trees
IMAGE_FOLDER_LAYOUT = "<root>/<class>/<image>.jpg"


class _FileLoader:
    """loader(i) for file-backed sets; a class, not a lambda, so DataLoader workers can pickle it (spawn)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __call__(self, i: int) -> Image.Image:
        return load_rgb(self.paths[i])


class _ArrayLoader:
    """loader(i) for in-memory (N, H, W, 3) uint8 arrays such as CIFAR-100."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


def check_image_file(path: str | Path) -> str | None:
    """None if the file decodes to an image, else why not (empty, not an image, too large, truncated/corrupt).

    JPEGs are decoded at 1/8 scale (draft mode): the whole entropy-coded stream is still read, so truncation is
    found, at a fraction of the cost of a full decode.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with open_checked(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            to_rgb(im)
        return None
    except ValueError as e:
        return f"too large ({e})" if "MAX_IMAGE_PIXELS" in str(e) else f"corrupt ({e})"
    except Image.DecompressionBombError as e:
        return f"too large ({e})"
    except Image.UnidentifiedImageError:
        return "not an image"
    except Exception as e:  # OSError (truncated), SyntaxError (broken headers), DecompressionBombError, ...
        return f"truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def verify_images(ds: ImageSet, workers: int | None = None) -> ImageSet:
    """`ds` without the files that do not decode, each skipped with one logged line and recorded in `skipped`.

    Run once when a dataset is opened, so that a bad file is found in the first minutes, not hours into a run.
    Decoding releases the GIL, so threads check files in parallel. In-memory sets are returned unchanged.
    """
    if ds.paths is None:
        return ds
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        why = list(pool.map(check_image_file, ds.paths))
    bad = [(p, w) for p, w in zip(ds.paths, why) if w is not None]
    for path, reason in bad:
        log.warning("skipped %r: %s", path, reason)
    if not bad:
        return ds
    out = ds.subset([i for i, w in enumerate(why) if w is None])
    out.skipped += bad
    return drop_empty_classes(out)


def drop_empty_classes(ds: ImageSet) -> ImageSet:
    """`ds` without classes that have no image left (relabelled in order), each skipped with one logged line."""
    counts = ds.class_counts()
    keep = [k for k in range(len(ds.classes)) if counts[k] > 0]
    if len(keep) == len(ds.classes):
        return ds
    if not keep:
        raise ValueError(f"{ds.name}: no class has a readable image ({len(ds.skipped)} files skipped)")
    for k in range(len(ds.classes)):
        if counts[k] == 0:
            log.warning("skipped class %r: no readable image", ds.classes[k])
    new = {k: n for n, k in enumerate(keep)}
    return ImageSet(
        ds.name,
        [ds.classes[k] for k in keep],
        ds.ids,
        [new[k] for k in ds.labels],
        ds.loader,
        ds.paths,
        ds.dataset_type,
        ds.skipped
        + [(ds.classes[k], "class without a readable image") for k in range(len(ds.classes)) if counts[k] == 0],
    )


def skipped_summary(ds: ImageSet) -> dict:
    """What `ds` left out, for run.json and result files: count, count per reason, and every entry with its reason."""
    reasons = Counter(why.split(" (")[0] for _, why in ds.skipped)
    return {
        "count": len(ds.skipped),
        "by_reason": dict(sorted(reasons.items())),
        "entries": [{"path": p, "reason": why} for p, why in ds.skipped],
    }


# Why an entry of an ImageFolder tree is not read. Everything under a data root is either read or listed with one of
# these (logged once per tree, counted per reason in run.json and the result file): nothing is dropped unseen.
HIDDEN_FOLDER = "hidden folder, not read (a tool's, such as .ipynb_checkpoints; rename it without the dot to use it)"
HIDDEN_CLASS = "hidden folder, not read (image files in it: {n}; rename it without the dot to use it as a class)"
HIDDEN_FILE = "hidden file, not read (such as .DS_Store or macOS ._ metadata)"
OUTSIDE_CLASSES = "file beside the class folders, not read (images go in <root>/<class>/)"
IMAGE_SUFFIX_REASON = "not an image file (suffix {suffix}; read: " + ", ".join(IMAGE_EXTENSIONS) + ")"


def _not_an_image(name: str) -> str | None:
    """None for an image file name, else why it is not read. Hidden files (.DS_Store, ._x.jpg from macOS archives)
    are never images even with an image suffix."""
    if name.startswith("."):
        return HIDDEN_FILE
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return IMAGE_SUFFIX_REASON.format(suffix=repr(suffix or "none"))
    return None


def _is_image(name: str) -> bool:
    return _not_an_image(name) is None


def _walk_images(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files below `folder`, recursively (as torchvision's ImageFolder), sorted by relative path; and every
    other file and folder below it that is not read, with the reason (hidden folders are not entered)."""
    found, skipped = [], []

    def unreadable(error: OSError) -> None:  # os.walk drops a folder it cannot list unless told
        skipped.append((str(error.filename), f"folder not readable ({type(error).__name__}: {error.strerror})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):  # often symlinked
        skipped += [(str(Path(dirpath) / d), HIDDEN_FOLDER) for d in sorted(dirnames) if d.startswith(".")]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            why = _not_an_image(f)
            (found.append(Path(dirpath) / f) if why is None else skipped.append((str(Path(dirpath) / f), why)))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix()), sorted(skipped)


def _images_under(folder: Path) -> list[Path]:
    """Image files below `folder`, recursively, sorted by relative path (see _walk_images)."""
    return _walk_images(folder)[0]


def _class_folders(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Class folder names, sorted like torchvision's ImageFolder (plain string order), and the other entries of
    `root` with why they are not read: hidden folders (.ipynb_checkpoints), files beside the class folders."""
    names, skipped = [], []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.is_dir() and e.name.startswith("."):  # a dot-named class folder is not a class: said so, with its images
            n = len(_walk_images(Path(e.path))[0])
            skipped.append((e.path, HIDDEN_CLASS.format(n=n) if n else HIDDEN_FOLDER))
        elif e.is_dir():
            names.append(e.name)
        else:
            skipped.append((e.path, HIDDEN_FILE if e.name.startswith(".") else OUTSIDE_CLASSES))
    return names, skipped


def _class_folder_names(root: Path) -> list[str]:
    return _class_folders(root)[0]


def _log_skipped(who: str, skipped: list[tuple[str, str]]) -> None:
    """One line per reason with a count and the first entry; each entry is listed in run.json / the result file."""
    by_reason: dict[str, list[str]] = {}
    for path, why in skipped:
        by_reason.setdefault(why, []).append(path)
    for why, paths in by_reason.items():
        log.warning("%s: skipped %d: %s, e.g. %r", who, len(paths), why, paths[0])


def _scan_class_folders(root: Path, who: str) -> tuple[list[str], list[Path], list[int], list[tuple[str, str]]]:
    """(class folder names sorted, image paths, labels, skipped) of an ImageFolder tree; skipped: every file and
    folder under `root` that is not read, with why (empty class folders, hidden folders and files, non-images)."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"{who}: no directory at {root}; expected {IMAGE_FOLDER_LAYOUT}. "
            f"Pass the folder that holds one sub-folder per class"
        )
    classes, skipped = _class_folders(root)
    if not classes:
        hidden = [Path(p).name for p, why in skipped if why == HIDDEN_FOLDER]
        raise ValueError(
            f"{who}: no class folders in {root}{f' (hidden folders are not read: {hidden[:3]})' if hidden else ''}; "
            f"expected {IMAGE_FOLDER_LAYOUT}. Move the images into one sub-folder per class"
        )
    walked = {cls: _walk_images(root / cls) for cls in classes}
    found = {cls: images for cls, (images, _) in walked.items()}
    empty = [cls for cls in classes if not found[cls]]
    for cls in empty:
        log.warning("%s: skipped class folder %r: no image files (%s)", who, cls, ", ".join(IMAGE_EXTENSIONS))
    skipped += [entry for cls in classes if found[cls] for entry in walked[cls][1]]  # inside a skipped class: the class
    _log_skipped(who, skipped)
    skipped += [(str(root / cls), "class folder without image files") for cls in empty]
    classes = [cls for cls in classes if found[cls]]
    if not classes:
        raise ValueError(
            f"{who}: no class folder in {root} holds images ({', '.join(IMAGE_EXTENSIONS)}); "
            f"expected {IMAGE_FOLDER_LAYOUT}. Add images to the class folders"
        )
    paths, labels = [], []
    for label, cls in enumerate(classes):
        paths += found[cls]
        labels += [label] * len(found[cls])
    return classes, paths, labels, sorted(skipped)


def image_folder(root: str | Path, name: str | None = None, dataset_type: str = "natural") -> ImageSet:
    """An ImageFolder tree `root/<class>/<image>`: classes sorted by folder name, images sorted by path.

    Ids are `<name>/<path relative to root>`, so they do not depend on where the tree lives on disk.
    """
    root = Path(root).expanduser()
    name = name or Path(os.path.abspath(root)).name  # abspath, not resolve(): a symlink's target must not rename ids
    classes, paths, labels, skipped = _scan_class_folders(root, f"image_folder {name!r}")
    ids = [f"{name}/{p.relative_to(root).as_posix()}" for p in paths]
    return ImageSet(
        name,
        classes,
        ids,
        labels,
        loader=_FileLoader([str(p) for p in paths]),
        paths=[str(p) for p in paths],
        dataset_type=dataset_type,
        skipped=skipped,
    )


# ---------------------------------------------------------------- the paper's datasets, from local roots
# layout: what `paper_dataset(name, root=<dir>)` expects (<dir> = --data-root). tables: where the paper uses it.
PAPER_DATASETS = {
    "cifar100": dict(
        layout="<dir>/cifar-100-python/{train,test,meta} (the python pickles of cifar-100-python.tar.gz)",
        splits=("train", "test"),
        num_classes=100,
        image_size="32x32",
        tables="Table 3 (PreActResNet-18)",
    ),
    "tiny-imagenet-200": dict(
        layout="<dir>/train/<wnid>/images/*.JPEG, <dir>/val/images/*.JPEG and <dir>/val/val_annotations.txt "
        "(tiny-imagenet-200.zip unpacked; val may be reorganised into <dir>/val/<wnid>/images/)",
        splits=("train", "val"),
        num_classes=200,
        image_size="64x64",
        tables="Table 3 (PreActResNet-18)",
    ),
    "imagenet-1k": dict(
        layout="<dir>/train/<wnid>/*.JPEG and <dir>/val/<wnid>/*.JPEG (validation images sorted into class folders)",
        splits=("train", "val"),
        num_classes=1000,
        image_size="variable, ~400x350 on average; trained at 224x224",
        tables="Table 3 (ResNet-50)",
    ),
    "flowers102": dict(
        layout="<dir>/flowers-102/{jpg/image_*.jpg, imagelabels.mat, setid.mat} (torchvision Flowers102 layout)",
        splits=("train", "val", "test"),
        num_classes=102,
        image_size="variable, shorter side 500 px; trained at 224x224",
        tables="Table 2 (10 images/class = the official train split, PreActResNet-34), Table 5 (WRN-101)",
    ),
    "cub-200-2011": dict(
        layout="<dir>/CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
        "images/<class>/<file>.jpg}",
        splits=("train", "test"),
        num_classes=200,
        image_size="variable, ~500x375; trained at 224x224",
        tables="Table 4 (DenseNet-121), Table 5 (WRN-101), Figs. 4, 6, 7; Table 6 names no dataset",
    ),
    "stanford-cars": dict(
        layout="<dir>/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/, "
        "cars_test_annos_withlabels.mat, cars_test/} (torchvision StanfordCars layout)",
        splits=("train", "test"),
        num_classes=196,
        image_size="variable, ~700x480; trained at 224x224",
        tables="Table 4 (DenseNet-121), Table 7 (ResNet-50 ablation)",
    ),
    "caltech101": dict(
        layout="<dir>/caltech101/101_ObjectCategories/<class>/image_*.jpg (torchvision Caltech101 layout)",
        splits=("train", "test"),
        num_classes=101,
        image_size="variable, ~300x200; trained at 224x224",
        tables="Table 4 (DenseNet-121); no official split, see CALTECH101_TEST_FRACTION",
    ),
}
# Caltech-101 has no official split. GuidedMixup's FGVC code (3neutronstar/GuidedMixup,
# FGVC/DataLoad/data_load.py), which the paper follows for Table 4, uses sklearn's stratified
# train_test_split(test_size=0.2, random_state=seed) over torchvision's Caltech101 order, seed default 1.
CALTECH101_TEST_FRACTION = 0.2
CALTECH101_SPLIT_SEED = 1


def _no_data(name: str, path: Path, why: str = "") -> FileNotFoundError:
    return FileNotFoundError(
        f"{name}: no data at {path}{why}; expected {PAPER_DATASETS[name]['layout']}. "
        f"Download it yourself and pass --data-root <dir>"
    )


def _require(name: str, *paths: Path) -> None:
    """Cheap existence checks before any parsing, so a wrong root fails in milliseconds with one line."""
    for p in paths:
        if not p.exists():
            raise _no_data(name, p)


def _file_set(
    name: str,
    split: str,
    classes: list[str],
    base: Path,
    paths: list[Path],
    labels: list[int],
    skipped: list[tuple[str, str]] = (),
) -> ImageSet:
    """ImageSet whose ids are `<name>/<split>/<path relative to base>` (stable across machines); skipped: what a
    folder scan did not read (_scan_class_folders)."""
    ids = [f"{name}/{split}/{p.relative_to(base).as_posix()}" for p in paths]
    return ImageSet(
        f"{name}-{split}",
        classes,
        ids,
        [int(v) for v in labels],
        loader=_FileLoader([str(p) for p in paths]),
        paths=[str(p) for p in paths],
        skipped=list(skipped),
    )


# ---------------------------------------------------------------- CIFAR-100: its pickles, read without running code
# The official cifar-100-python/{train,test,meta} were written by Python 2's cPickle (protocol 2) with numpy: a dict of
# str keys, lists of ints and strs, and one uint8 array, which names exactly three globals (numpy's array
# reconstructor, ndarray, dtype). torchvision (datasets/cifar.py) trusts them after an md5 check, which no stand-in
# can pass; we instead unpickle with only those globals allowed, so no file can make the loader run code.
_NOT_CIFAR = "truncated or not a CIFAR-100 python pickle"
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, in numpy._core (numpy 2) or numpy.core (1.x)


def _latin1_encode(text: str, encoding: str) -> bytes:
    # Python 3's pickle writes bytes at protocol 2 as _codecs.encode(<str>, "latin1"); nothing else is accepted.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {type(text).__name__} and encoding {encoding!r}")
    return text.encode("latin1")


_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the official files (Python 2, numpy 1.x)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the same, pickled under numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,  # the array's bytes, pickled by Python 3 at protocol 2
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only _CIFAR_GLOBALS: a pickle naming anything else (os.system, builtins.eval,
    a class whose constructor runs code) is refused before that object is looked up, let alone called."""

    def find_class(self, module: str, name: str):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def _cifar_pickle(path: Path, *keys: str) -> dict:
    """One pickle of cifar-100-python as a dict holding `keys`, or a one-line error naming the file."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()  # latin1: Python 2 str -> str, as torchvision
    except _ForbiddenGlobal as e:
        why = f" (refused: the pickle names {e}, which the official files never do; nothing in it was run)"
        raise _no_data("cifar100", path, why) from None
    except Exception as e:  # truncated (EOFError, UnpicklingError), not a pickle, an array state numpy rejects, ...
        raise _no_data("cifar100", path, f" ({_NOT_CIFAR}: {type(e).__name__})") from None
    missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise _no_data("cifar100", path, f" ({_NOT_CIFAR}: no {missing[0]!r} entry)")
    return entry


def _cifar_arrays(base: Path, split: str, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """(N, 32, 32, 3) uint8 images and N fine labels of one split, checked to be what the official files hold."""
    path = base / split
    entry = _cifar_pickle(path, "data", "fine_labels")
    data, labels = entry["data"], entry["fine_labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise _no_data("cifar100", path, f" ({_NOT_CIFAR}: 'data' is not an (N, 3072) uint8 array)")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise _no_data("cifar100", path, f" ({_NOT_CIFAR}: 'fine_labels' is not a list of {len(data)} labels)")
    if any(type(y) is not int or not 0 <= y < num_classes for y in labels):
        raise _no_data("cifar100", path, f" ({_NOT_CIFAR}: a label is not a class index 0..{num_classes - 1})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 3072) -> (N, 3, 32, 32) -> (N, 32, 32, 3) HWC
    return images, labels


def _cifar100(root: Path, split: str) -> ImageSet:
    base = root / "cifar-100-python"
    _require("cifar100", base / "train", base / "test", base / "meta")  # the archive has all three
    names = _cifar_pickle(base / "meta", "fine_label_names")["fine_label_names"]
    if not (isinstance(names, list) and names and all(isinstance(c, str) for c in names)):
        raise _no_data("cifar100", base / "meta", f" ({_NOT_CIFAR}: 'fine_label_names' is not a list of names)")
    images, labels = _cifar_arrays(base, split, len(names))
    return ImageSet(
        f"cifar100-{split}",
        [label_words(c) for c in names],
        [f"cifar100/{split}/{i:05d}" for i in range(len(images))],
        labels,
        loader=_ArrayLoader(images),
    )


def _wnid_names(root: Path, wnids: list[str]) -> list[str]:
    """First synonym per WordNet id from words.txt (Tiny-ImageNet) or LOC_synset_mapping.txt (ImageNet, Kaggle),
    for prompts; the wnid itself when neither file exists. ImageNet has a few repeated first synonyms (crane)."""
    for fname in ("words.txt", "LOC_synset_mapping.txt"):
        if (root / fname).is_file():
            words = {}
            for line in (root / fname).read_text(encoding="utf-8").splitlines():
                parts = line.split(None, 1)  # tab in words.txt, space in LOC_synset_mapping.txt
                if len(parts) == 2:
                    words[parts[0]] = parts[1].split(",")[0].strip()
            return [words.get(w, w) for w in wnids]
    return list(wnids)


def _plain_name(name: str, source: Path) -> str:
    # Names from an annotation file become path parts: refuse anything that could leave the dataset root.
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{source}: entry {name!r} is not a plain file or folder name; fix or replace that file")
    return name


def _plain_relpath(rel: str, source: Path) -> str:
    # A relative path from an annotation file (CUB's images.txt): never absolute, never through `..`.
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise ValueError(f"{source}: entry {rel!r} is not a path inside the dataset root; fix or replace that file")
    return rel


def _tiny_annotations(ann: Path) -> list[tuple[str, str]]:
    """(file, wnid) rows of val_annotations.txt (tab-separated: file, wnid, x0, y0, x1, y1)."""
    rows = [line.split("\t") for line in ann.read_text(encoding="utf-8").splitlines() if line.strip()]
    short = next((n for n, r in enumerate(rows, 1) if len(r) < 2), None)
    if short is not None:  # e.g. spaces instead of tabs: said here, not as an IndexError
        raise ValueError(f"{ann}: entry {short} is not '<file> TAB <wnid> TAB ...'; fix or replace that file")
    return [(_plain_name(r[0], ann), _plain_name(r[1], ann)) for r in rows]


def _tiny_val_pairs(val: Path) -> tuple[list[tuple[str, str]], list[Path]]:
    """(file, wnid) and the file's current path, for the original or the reorganised val layout."""
    ann = val / "val_annotations.txt"
    if ann.is_file():
        pairs = _tiny_annotations(ann)
        # Per-file lookup, so a half-reorganised folder (an interrupted reorganisation) still reads.
        paths = [val / "images" / f if (val / "images" / f).is_file() else val / w / "images" / f for f, w in pairs]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise _no_data("tiny-imagenet-200", missing[0], f" (listed in {ann})")
        return pairs, paths
    if (val / "images").is_dir():  # original layout: the labels exist only in the annotations file
        raise _no_data("tiny-imagenet-200", ann)
    paths = [p for w in _class_folder_names(val) for p in _images_under(val / w)]
    return [(p.name, p.relative_to(val).parts[0]) for p in paths], paths


def _tiny_imagenet(root: Path, split: str) -> ImageSet:
    name = "tiny-imagenet-200"
    _require(name, root / "train", root / split)  # val labels index the train class folders
    if split == "train":
        wnids, paths, labels, skipped = _scan_class_folders(root / "train", name)
        return _file_set(name, split, _wnid_names(root, wnids), root / "train", paths, labels, skipped)
    wnids = _class_folder_names(root / "train")
    pairs, paths = _tiny_val_pairs(root / "val")
    unknown = sorted({w for _, w in pairs} - set(wnids))
    if unknown:
        raise ValueError(
            f"{name}: val classes {unknown[:5]} have no folder in {root / 'train'}; "
            f"expected {PAPER_DATASETS[name]['layout']}"
        )
    order = sorted(range(len(pairs)), key=lambda j: (pairs[j][1], pairs[j][0]))  # ImageFolder order, both layouts
    label_of = {w: k for k, w in enumerate(wnids)}
    # The id is the reorganised path in both layouts, so reorganising never changes an image's id (nor its seed).
    ids = [f"{name}/val/{pairs[j][1]}/images/{pairs[j][0]}" for j in order]
    files = [str(paths[j]) for j in order]
    return ImageSet(
        f"{name}-val",
        _wnid_names(root, wnids),
        ids,
        [label_of[pairs[j][1]] for j in order],
        loader=_FileLoader(files),
        paths=files,
    )


def reorganize_tiny_imagenet_val(root: str | Path) -> int:
    """Move `root/val/images/<file>` to `root/val/<wnid>/images/<file>` (ImageFolder layout); returns files moved.

    Idempotent: files already in place are skipped, so an interrupted run can simply be re-run. Only renames
    inside root/val (names are checked to be plain), keeps val_annotations.txt, and removes val/images once empty.
    """
    val = Path(root).expanduser() / "val"
    ann = val / "val_annotations.txt"
    _require("tiny-imagenet-200", val, ann)
    moved = 0
    for f, w in _tiny_annotations(ann):
        src, dst = val / "images" / f, val / w / "images" / f
        if dst.exists():
            continue  # moved by an earlier run; a stray copy left at src is never overwritten onto it
        if not src.is_file():
            raise _no_data("tiny-imagenet-200", src, f" (listed in {ann})")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)  # a rename: atomic on one file system, so no half-moved file
        moved += 1
    try:
        (val / "images").rmdir()  # only succeeds when empty
    except OSError:
        pass
    return moved


def _imagenet_1k(root: Path, split: str) -> ImageSet:
    name = "imagenet-1k"
    _require(name, root / split)
    wnids, paths, labels, skipped = _scan_class_folders(root / split, name)
    other = root / ("val" if split == "train" else "train")
    if other.is_dir() and _class_folder_names(other) != wnids:  # labels must mean the same class in both splits
        raise ValueError(
            f"{name}: class folders of {root / split} and {other} differ; expected {PAPER_DATASETS[name]['layout']}"
        )
    return _file_set(name, split, _wnid_names(root, wnids), root / split, paths, labels, skipped)


# Flowers-102 as torchvision's datasets/flowers102.py reads it (same files, order and labels), without its md5 check
# of the two .mat files, which no stand-in can pass. A .mat file holds arrays only: loading one runs no code.
FLOWERS102_SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}  # setid.mat: 1-based image numbers


def _flowers_mat(path: Path, key: str) -> np.ndarray:
    """(n,) int64 array `key` of a Flowers-102 .mat file (1-based numbers), or a one-line error naming the file."""
    from scipy.io import loadmat

    try:
        values = np.atleast_1d(loadmat(path, squeeze_me=True)[key])  # squeeze_me as torchvision: (1, n) -> (n,)
    except Exception as e:  # not a .mat (ValueError, MatReadError), truncated, no such variable (KeyError), ...
        raise _no_data("flowers102", path, f" (not a readable .mat file with {key!r}: {type(e).__name__})") from None
    numeric = values.ndim == 1 and values.size > 0 and values.dtype.kind in "iuf"  # MATLAB saves doubles by default
    if not numeric or not np.all(values == np.round(values)) or values.min() < 1:
        raise _no_data("flowers102", path, f" ({key!r} is not a list of 1-based numbers)")
    return values.astype(np.int64)


def _flowers102(root: Path, split: str) -> ImageSet:
    base = root / "flowers-102"
    _require("flowers102", base / "jpg", base / "imagelabels.mat", base / "setid.mat")
    labels = _flowers_mat(base / "imagelabels.mat", "labels")  # (N,): class (1-based) of image_<i>.jpg, i = 1..N
    numbers = _flowers_mat(base / "setid.mat", FLOWERS102_SPLIT_KEYS[split])  # (n,): image numbers of the split
    if numbers.max() > len(labels):
        why = f" (it lists image {numbers.max()}, but imagelabels.mat labels only {len(labels)} images)"
        raise _no_data("flowers102", base / "setid.mat", why)
    from torchvision.datasets import Flowers102  # only for its class names, a class attribute: no I/O

    # The 102 Oxford names as torchvision ships them (same order as imagelabels.mat, label 1 = "pink primrose");
    # a set labelled 1..C has its first C classes (a stand-in with fewer classes; the real one has 102).
    names = list(getattr(Flowers102, "classes", [])) or [f"flower class {i}" for i in range(102)]
    if labels.max() > len(names):
        why = f" (label {labels.max()}: Oxford Flowers-102 has {len(names)} classes)"
        raise _no_data("flowers102", base / "imagelabels.mat", why)
    paths = [base / "jpg" / f"image_{i:05d}.jpg" for i in numbers]
    return _file_set(
        "flowers102", split, names[: labels.max()], base / "jpg", paths, [labels[i - 1] - 1 for i in numbers]
    )


def _cub_table(path: Path) -> dict[int, str]:
    """'<id> <value>' lines of a CUB metadata file -> {id: value}; a malformed line is a one-line error."""
    table = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(None, 1)
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}: line {n} is not '<id> <value>'; fix or replace that file")
        table[int(parts[0])] = parts[1].strip()
    return table


def _cub_check(base: Path, images: dict, labels: dict, is_train: dict, classes: dict) -> None:
    """Classes are numbered 1..C, every image has a split entry and a label 1..C: else a KeyError later, or a label
    the classifier has no output for."""
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise ValueError(f"{base / 'classes.txt'}: class ids are not 1..{len(classes)}; fix or replace that file")
    for fname, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
        missing = sorted(set(images) - set(table))
        if missing:
            raise ValueError(f"{base / fname}: no entry for image {missing[0]} of images.txt; fix or replace that file")
    bad = next((i for i in sorted(images) if not (labels[i].isdigit() and 1 <= int(labels[i]) <= len(classes))), None)
    if bad is not None:
        raise ValueError(
            f"{base / 'image_class_labels.txt'}: image {bad} has class {labels[bad]!r}, not 1..{len(classes)}; "
            f"fix or replace that file"
        )


def _cub_200_2011(root: Path, split: str) -> ImageSet:
    base = root if (root / "images.txt").is_file() else root / "CUB_200_2011"  # root may be the folder itself
    names = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
    _require("cub-200-2011", *(base / n for n in names), base / "images")
    images, labels, is_train, classes = (_cub_table(base / n) for n in names)
    _cub_check(base, images, labels, is_train, classes)
    keep = sorted(i for i in images if is_train[i] == ("1" if split == "train" else "0"))  # 1 = train
    class_names = [label_words(classes[k]) for k in sorted(classes)]  # '001.Black_footed_Albatross' -> words
    paths = [base / "images" / _plain_relpath(images[i], base / "images.txt") for i in keep]
    return _file_set("cub-200-2011", split, class_names, base / "images", paths, [int(labels[i]) - 1 for i in keep])


def _stanford_cars(root: Path, split: str) -> ImageSet:
    base = root / "stanford_cars"
    annotations = (
        base / "devkit" / "cars_train_annos.mat" if split == "train" else base / "cars_test_annos_withlabels.mat"
    )
    _require("stanford-cars", base / "devkit" / "cars_meta.mat", annotations, base / f"cars_{split}")
    from torchvision.datasets import StanfordCars

    try:
        ds = StanfordCars(str(root), split=split, download=False)
    except RuntimeError:
        raise _no_data("stanford-cars", base) from None
    except Exception as e:  # a malformed .mat: scipy's ValueError/KeyError names neither the file nor the layout
        why = f" (a .mat file does not read as torchvision's StanfordCars expects: {type(e).__name__})"
        raise _no_data("stanford-cars", base, why) from None
    folder = base / f"cars_{split}"
    paths = [Path(p) for p, _ in ds._samples]  # private but unchanged since torchvision 0.13
    labels = [int(t) for _, t in ds._samples]
    odd = next((p for p in paths if p.parent != folder), None)  # an fname such as ../../x or /etc/passwd
    if odd is not None:
        raise ValueError(f"{annotations}: entry {str(odd)!r} is not a file name in {folder}; fix or replace that file")
    if any(not 0 <= t < len(ds.classes) for t in labels):
        raise ValueError(
            f"{annotations}: a class is not 1..{len(ds.classes)} (the class_names of cars_meta.mat); "
            f"fix or replace that file"
        )
    return _file_set("stanford-cars", split, [str(c) for c in ds.classes], folder, paths, labels)


def caltech101_split(labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """GuidedMixup's Caltech-101 split: stratified 80/20, seed 1, over torchvision's Caltech101 order (sorted)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(
        idx,
        stratify=np.asarray(labels),
        test_size=CALTECH101_TEST_FRACTION,
        train_size=1 - CALTECH101_TEST_FRACTION,
        random_state=CALTECH101_SPLIT_SEED,
    )
    return np.sort(train), np.sort(test)


def _caltech101_check(folder: Path) -> None:
    """What torchvision's Caltech101 (datasets/caltech.py) assumes of 101_ObjectCategories, so that a departure is
    one line, not a traceback or a split shifted by a phantom file: it takes every entry for a class folder, removes
    BACKGROUND_Google by name, and numbers a class's files image_0001.jpg .. image_<n>.jpg by counting them."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    if "BACKGROUND_Google" not in [e.name for e in entries]:
        raise ValueError(
            f"caltech101: no folder {folder / 'BACKGROUND_Google'}; torchvision's Caltech101 (whose class order "
            f"the split follows) expects it and leaves it out: create it empty or unpack the archive again"
        )
    for e in entries:
        if not e.is_dir() or e.name.startswith("."):
            raise ValueError(
                f"caltech101: {e.path} is not a class folder, yet torchvision's Caltech101 would take it for one: "
                f"move it out"
            )
        if e.name == "BACKGROUND_Google":
            continue
        files = sorted(os.listdir(e.path))
        expected = {f"image_{i:04d}.jpg" for i in range(1, len(files) + 1)}
        odd = next((f for f in files if f not in expected), None)
        if odd is not None:
            raise ValueError(
                f"caltech101: {Path(e.path) / odd} is not one of image_0001.jpg .. image_{len(files):04d}.jpg; "
                f"torchvision's Caltech101 numbers a class's files by counting them: move it out or renumber"
            )
        if len(files) < 2:  # sklearn's stratified split needs two per class
            raise ValueError(
                f"caltech101: {e.path} holds {len(files)} image(s); the 80/20 split needs 2 or more per class"
            )


def _caltech101(root: Path, split: str) -> ImageSet:
    folder = root / "caltech101" / "101_ObjectCategories"
    _require("caltech101", folder)  # before torchvision, whose constructor would mkdir root/caltech101
    _caltech101_check(folder)
    from torchvision.datasets import Caltech101

    try:
        ds = Caltech101(str(root), download=False)  # drops BACKGROUND_Google: 101 classes
    except RuntimeError:
        raise _no_data("caltech101", folder) from None
    train, test = caltech101_split(ds.y)
    idx = train if split == "train" else test
    paths = [folder / ds.categories[ds.y[i]] / f"image_{ds.index[i]:04d}.jpg" for i in idx]
    return _file_set(
        "caltech101", split, [label_words(c) for c in ds.categories], folder, paths, [ds.y[i] for i in idx]
    )


_READERS = {
    "cifar100": _cifar100,
    "tiny-imagenet-200": _tiny_imagenet,
    "imagenet-1k": _imagenet_1k,
    "flowers102": _flowers102,
    "cub-200-2011": _cub_200_2011,
    "stanford-cars": _stanford_cars,
    "caltech101": _caltech101,
}


def paper_dataset(name: str, root: str | Path, split: str = "train") -> ImageSet:
    """One split of a paper dataset, read from a local root (see PAPER_DATASETS for layouts). Never downloads."""
    if name not in PAPER_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(PAPER_DATASETS)}")
    splits = PAPER_DATASETS[name]["splits"]
    if split not in splits:
        raise ValueError(f"{name}: split={split!r}; expected one of {', '.join(splits)}")
    root = Path(root).expanduser()
    _require(name, root)
    return _READERS[name](root, split)


# ---------------------------------------------------------------- a dataset by name, as the experiments name it
SPLIT_FOLDERS = ("train", "test", "val")  # dataset=folder: <root>/train beside <root>/test (or val)


def beside_split(root: Path, split: str) -> list[tuple[str, str]]:
    """What the split layout <root>/{train,test,val} leaves unread at its top, with why: the training split lists
    the files and folders beside the split folders, an evaluation split the other evaluation folder (val/ when
    test/ is evaluated). So every entry under the root is read or listed, each once."""
    out = []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.name in SPLIT_FOLDERS and e.is_dir():
            if split != "train" and e.name not in ("train", split):
                out.append((e.path, f"evaluation split not read (this run evaluates {split}/; --test-split {e.name})"))
        elif split == "train":
            out.append((e.path, "file or folder beside the split folders, not read (only train/, test/, val/ are)"))
    _log_skipped(f"data_root {str(root)!r}", out)
    return out


def open_dataset(name: str, root: str | None, split: str, shots: int | None = None, seed: int = 0) -> ImageSet:
    """'digits' (bundled), a paper dataset name (needs `root`), or 'folder' (an ImageFolder at `root`), checked
    file by file: a truncated or non-image file is skipped now (one line each), not met hours into a run.
    shots: k training images per class (the few-shot setting of Table 2), chosen with `seed`."""
    if shots is not None and shots < 1:
        raise ValueError(f"few_shot={shots}: expected an integer >= 1 (training images per class)")
    if name == "digits":
        ds = digits(split)
    elif name == "folder":
        if root is None:
            raise ValueError("dataset=folder needs --data-root <dir with one sub-folder per class>")
        if not Path(root).expanduser().is_dir():
            raise FileNotFoundError(
                f"data_root={root}: no such folder; expected {IMAGE_FOLDER_LAYOUT} "
                f"(or <root>/train/<class>/... beside <root>/test)"
            )
        if (Path(root) / split).is_dir():
            ds = image_folder(Path(root) / split)
            ds.skipped += beside_split(Path(root), split)
        elif split == "train":
            ds = image_folder(root)  # a flat class tree: all of it is the training set
        else:  # never evaluate on the training images
            raise ValueError(
                f"dataset=folder: no {Path(root) / split}; evaluation needs <root>/test (or <root>/val "
                f"with --test-split val) beside <root>/train, each with one sub-folder per class"
            )
    else:
        if name not in PAPER_DATASETS:
            raise ValueError(f"dataset={name!r}: expected 'digits', 'folder' or one of {sorted(PAPER_DATASETS)}")
        if root is None:
            raise ValueError(
                f"dataset={name} needs --data-root <dir>; expected layout: {PAPER_DATASETS[name]['layout']}"
            )
        ds = paper_dataset(name, root, split)
    ds = verify_images(ds)
    if ds.skipped:
        log.warning(
            "%s: %d files or folders skipped (%s); they are listed in run.json / the result file",
            ds.name,
            len(ds.skipped),
            skipped_summary(ds)["by_reason"],
        )
    return few_shot(ds, shots, seed) if shots is not None and split == "train" else ds


def eval_split(name: str, root: str | None, given: str | None = None) -> str:
    """The split a dataset is evaluated on: `given` if set, else 'test' where it exists, else 'val'."""
    if given:
        return given
    if name in PAPER_DATASETS:
        return "test" if "test" in PAPER_DATASETS[name]["splits"] else "val"
    if name == "folder" and root is not None and not (Path(root) / "test").is_dir() and (Path(root) / "val").is_dir():
        return "val"
    return "test"


def open_train_test(
    name: str, root: str | None, shots: int | None = None, test_split: str | None = None
) -> tuple[ImageSet, ImageSet]:
    """The training set (few-shot if asked) and the evaluation set, checked to name the same classes."""
    train_ds = open_dataset(name, root, "train", shots)
    split = eval_split(name, root, test_split)
    test_ds = open_dataset(name, root, split)
    if test_ds.classes != train_ds.classes:
        only = sorted(set(train_ds.classes) ^ set(test_ds.classes))[:5]
        raise ValueError(
            f"dataset={name}: the {split} split's classes differ from train's "
            f"({len(test_ds.classes)} vs {len(train_ds.classes)}; e.g. {only}): labels would not match"
        )
    return train_ds, test_ds
