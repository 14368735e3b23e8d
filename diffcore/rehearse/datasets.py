"""Stand-in datasets for the rehearsal: every paper dataset in its real on-disk layout, a few images per class.

`write_datasets(root, size, seed)` writes `<root>/<name>/` for each name of `diffcore.data.PAPER_DATASETS`, laid out
as the unpacked official archive (the folders, file names, annotation files and formats: python pickles, MATLAB .mat
files, JPEGs), with the real datasets' first class names, so that the kit's own readers (`data.paper_dataset`,
`data.open_dataset`) read it unpatched, exactly as they read the real data. The images are cheap but
class-dependent (a class-coloured shape on seeded noise), so a classifier can learn something; every byte is a pure
function of (seed, dataset, split, class, image), so two writes with one seed are identical.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import CALTECH101_TEST_FRACTION, PAPER_DATASETS
from ..engine.checks import json_text

# Presets: images per class and resolution. "tiny": a CPU or CI runs every paper job on it in minutes. "full": a GPU
# measures seconds per step at the paper's batch sizes and resolutions (the images are as large as the real ones).
SIZES: dict[str, dict] = {
    "tiny": {  # every paper job on a 2-core CPU in minutes (make rehearse, CI)
        "classes": 3,
        "train": 4,  # images per class
        "test": 2,  # per class, in test/ or val/ (whichever evaluation split the dataset has)
        "flowers": (10, 2, 2),  # train, val, test per class: Table 2 trains on the official 10 per class
        "flowers_classes": 2,  # so fewer classes: its 10 per class make it the largest set (DiffuseMix: x 9 edits)
        "side": (40, 72),  # px, each side drawn in this range (CIFAR 32x32 and Tiny-ImageNet 64x64 always)
    },
    "full": {
        "classes": 4,
        "train": 32,
        "test": 8,
        "flowers": (10, 10, 20),  # the official split: 10 train, 10 val, the rest (>= 20) test per class
        "flowers_classes": 4,
        "side": None,  # the real datasets' typical resolutions: REAL_RESOLUTION
    },
}
# (width, height) typical of each dataset's images, each side varied by +-15% (Flowers: shorter side exactly 500).
REAL_RESOLUTION = {
    "imagenet-1k": (500, 375),
    "flowers102": (667, 500),
    "cub-200-2011": (500, 375),
    "stanford-cars": (700, 480),
    "caltech101": (300, 200),
}
FIXED_RESOLUTION = {"cifar100": (32, 32), "tiny-imagenet-200": (64, 64)}  # every image of the real sets
LAYOUT_VERSION = 3  # in each completion marker: a change of what is written makes older sets refused, not mixed

# ---------------------------------------------------------------- the real datasets' first classes, in label order
CIFAR100_COARSE = [  # meta["coarse_label_names"] of cifar-100-python: the 20 superclasses, alphabetical
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]  # fmt: skip
CIFAR100_FINE = [  # (fine label name, its superclass): CIFAR-100's first classes, alphabetical as in meta
    ("apple", "fruit_and_vegetables"),
    ("aquarium_fish", "fish"),
    ("baby", "people"),
    ("bear", "large_carnivores"),
    ("beaver", "aquatic_mammals"),
    ("bed", "household_furniture"),
    ("bee", "insects"),
    ("beetle", "insects"),
]
TINY_IMAGENET = [  # the first wnids of Tiny-ImageNet-200 in sorted order, with words.txt's synonyms
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01629819", "European fire salamander, Salamandra salamandra"),
    ("n01641577", "bullfrog, Rana catesbeiana"),
    ("n01644900", "tailed frog, bell toad, ribbed toad, tailed toad, Ascaphus trui"),
    ("n01698640", "American alligator, Alligator mississipiensis"),
    ("n01742172", "boa constrictor, Constrictor constrictor"),
    ("n01768244", "trilobite"),
    ("n01770393", "scorpion"),
]
IMAGENET = [  # ImageNet-1k classes 0..7 (sorted wnids), with LOC_synset_mapping.txt's names
    ("n01440764", "tench, Tinca tinca"),
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01484850", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"),
    ("n01491361", "tiger shark, Galeocerdo cuvieri"),
    ("n01494475", "hammerhead, hammerhead shark"),
    ("n01496331", "electric ray, crampfish, numbfish, torpedo"),
    ("n01498041", "stingray"),
    ("n01514668", "cock"),
]
CUB = [  # CUB_200_2011/classes.txt
    "001.Black_footed_Albatross",
    "002.Laysan_Albatross",
    "003.Sooty_Albatross",
    "004.Groove_billed_Ani",
    "005.Crested_Auklet",
    "006.Least_Auklet",
    "007.Parakeet_Auklet",
    "008.Rhinoceros_Auklet",
]
STANFORD_CARS = [  # devkit/cars_meta.mat class_names, in label order (1-based in the annotations)
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Acura TL Sedan 2012",
    "Acura TL Type-S 2008",
    "Acura TSX Sedan 2012",
    "Acura Integra Type R 2001",
    "Acura ZDX Hatchback 2012",
    "Aston Martin V8 Vantage Convertible 2012",
]
CALTECH101 = [  # 101_ObjectCategories' first class folders in sorted order (after BACKGROUND_Google, not a class)
    "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes", "anchor", "ant",
]  # fmt: skip
MAX_CLASSES = 8  # the lists above

# A class-coloured shape on seeded noise: colour and shape (disc, square, diamond) follow the label.
PALETTE = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 190, 30), (170, 50, 200), (30, 190, 200), (240, 120, 20)]


# ---------------------------------------------------------------- images
def _rng(seed: int, name: str, split: str, label: int, k: int) -> np.random.Generator:
    """The generator of one image: a pure function of its coordinates, never of the order things are written in."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(split.encode()), label, k])


def _resolution(name: str, size: str, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) of one image of `name` at `size`."""
    if name in FIXED_RESOLUTION:
        return FIXED_RESOLUTION[name]
    side = SIZES[size]["side"]
    if side is not None:
        w, h = rng.integers(side[0], side[1] + 1, size=2)
        return int(w), int(h)
    if name == "flowers102":  # shorter side 500, either orientation
        longer = int(rng.integers(500, 751))
        return (longer, 500) if rng.random() < 0.5 else (500, longer)
    w, h = REAL_RESOLUTION[name]
    return int(w * rng.uniform(0.85, 1.15)), int(h * rng.uniform(0.85, 1.15))


def picture(rng: np.random.Generator, label: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: a shape in the class's colour (disc, square or diamond by class) on a background of
    the image's own: soft blobs of a random mean colour and contrast. Backgrounds as varied as real photos, so that a
    class's images are no closer to each other than to other pictures: with near-identical images per class, Eq. (5)'s
    tau_k (their mean similarity) sits above anything the random-weight generator makes, and the filter keeps nothing
    (measured: tau 0.96-0.99 vs at most 0.65 with a plain noise background; with these, most sources get a
    counterpart within the paper's 5 attempts)."""
    coarse = rng.normal(rng.uniform(60, 200, 3), rng.uniform(20, 80), (max(1, height // 8), max(1, width // 8), 3))
    background = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    pixels = np.array(background)  # (H, W, 3), writable
    r = rng.uniform(0.15, 0.3) * min(width, height)
    cy, cx = rng.uniform(r, height - r), rng.uniform(r, width - r)
    dy = np.abs(np.arange(height)[:, None] - cy)  # (H, 1)
    dx = np.abs(np.arange(width)[None, :] - cx)  # (1, W)
    kind = label % 3
    inside = dx**2 + dy**2 <= r**2 if kind == 0 else np.maximum(dx, dy) <= 0.85 * r if kind == 1 else dx + dy <= r
    colour = np.clip(np.array(PALETTE[label % len(PALETTE)]) + rng.integers(-25, 26, 3), 0, 255)
    pixels[inside] = colour.astype(np.uint8)  # (H, W) mask -> every pixel of the shape
    return pixels


def _image(
    path: Path, name: str, split: str, c: int, k: int, size: str, seed: int, gray: bool = False
) -> tuple[int, int]:
    """Image k of class c of one split as a JPEG at `path`; returns its (width, height). gray: saved grayscale, as a
    few real images are (the kit's reader must convert them)."""
    rng = _rng(seed, name, split, c, k)
    w, h = _resolution(name, size, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(picture(rng, c, w, h))
    (im.convert("L") if gray else im).save(path, format="JPEG", quality=90)  # libjpeg's output is deterministic
    return w, h


def _permutation(seed: int, name: str, what: str, n: int) -> list[int]:
    """A seeded order of n things: the real archives interleave classes wherever files are numbered across them."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(what.encode())])
    return [int(i) for i in rng.permutation(n)]


def _savemat(path: Path, arrays: dict) -> None:
    """scipy's savemat with a fixed header text: scipy writes the time of writing into it, and every byte here is a
    function of the seed. loadmat reads the format version from bytes 124..127, never this text."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, arrays)
    header = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: diffcore.rehearse (stand-in data)".ljust(116)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + buf.getvalue()[116:])


def _text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ---------------------------------------------------------------- CIFAR-100: python pickles as Python 2 wrote them
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array reconstructor (numpy._core.multiarray under numpy 2)


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler: its opcodes can be chosen one by one
    """Protocol 2 as Python 2's cPickle wrote cifar-100-python: str and the array's bytes as BINSTRING (Python 3
    writes BINUNICODE and _codecs.encode), numpy's reconstructor under its numpy 1.x name numpy.core.multiarray.
    So the files name exactly the globals the official ones name, and the reader meets the same bytes-as-str data."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: str | bytes) -> None:
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        n = len(raw)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + raw)
        self.memoize(obj)

    dispatch[str] = save_python2_str
    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _python2_pickle(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def write_cifar100(dest: Path, size: str, seed: int) -> None:
    """cifar-100-python/{train,test,meta}: dicts with "data" (N, 3072) uint8 (each row R, G, B planes of 32x32),
    "fine_labels", "coarse_labels", "filenames", "batch_label"; meta with both label-name lists."""
    spec, base = SIZES[size], dest / "cifar-100-python"
    base.mkdir(parents=True)
    fine = CIFAR100_FINE[: spec["classes"]]
    for split, n, batch in (("train", spec["train"], "training"), ("test", spec["test"], "testing")):
        pairs = [(c, k) for c in range(len(fine)) for k in range(n)]
        pairs = [pairs[i] for i in _permutation(seed, "cifar100", split, len(pairs))]  # real batches are shuffled
        pixels = [picture(_rng(seed, "cifar100", split, c, k), c, 32, 32) for c, k in pairs]  # N x (32, 32, 3)
        entry = {
            "data": np.stack([p.transpose(2, 0, 1).reshape(-1) for p in pixels]),  # (N, 3072): R, G, B planes
            "fine_labels": [c for c, _ in pairs],
            "coarse_labels": [CIFAR100_COARSE.index(fine[c][1]) for c, _ in pairs],
            "filenames": [f"{fine[c][0]}_s_{k:06d}.png" for c, k in pairs],  # as the real ones: bos_taurus_s_000507.png
            "batch_label": f"{batch} batch 1 of 1",
        }
        _python2_pickle(base / split, entry)
    _python2_pickle(base / "meta", {"fine_label_names": [f for f, _ in fine], "coarse_label_names": CIFAR100_COARSE})


# ---------------------------------------------------------------- Tiny-ImageNet-200 and ImageNet-1k: wnid folders
TINY_BOX = "8\t8\t55\t55"  # x0, y0, x1, y1 in px (the annotation files' columns): one box for every image


def write_tiny_imagenet(dest: Path, size: str, seed: int) -> None:
    """tiny-imagenet-200.zip unpacked: train/<wnid>/images/<wnid>_<k>.JPEG beside train/<wnid>/<wnid>_boxes.txt,
    val/images/val_<i>.JPEG with val/val_annotations.txt, test/images/test_<i>.JPEG (unlabelled), wnids.txt,
    words.txt. Every image 64x64; one is grayscale, as some real ones are."""
    name, spec = "tiny-imagenet-200", SIZES[size]
    classes = TINY_IMAGENET[: spec["classes"]]
    for c, (wnid, _) in enumerate(classes):
        files = [f"{wnid}_{k}.JPEG" for k in range(spec["train"])]
        for k, f in enumerate(files):
            _image(dest / "train" / wnid / "images" / f, name, "train", c, k, size, seed, gray=(c, k) == (1, 0))
        _text(dest / "train" / wnid / f"{wnid}_boxes.txt", [f"{f}\t{TINY_BOX}" for f in files])
    val = [(c, k) for c in range(len(classes)) for k in range(spec["test"])]
    val = [val[i] for i in _permutation(seed, name, "val", len(val))]  # val_<i> interleaves the classes
    for i, (c, k) in enumerate(val):
        _image(dest / "val" / "images" / f"val_{i}.JPEG", name, "val", c, k, size, seed)
    rows = [f"val_{i}.JPEG\t{classes[c][0]}\t{TINY_BOX}" for i, (c, _) in enumerate(val)]
    _text(dest / "val" / "val_annotations.txt", rows)
    for i in range(len(val)):  # unlabelled; no reader opens them
        _image(dest / "test" / "images" / f"test_{i}.JPEG", name, "test", i % len(classes), i, size, seed)
    wnids = [w for w, _ in classes]
    _text(dest / "wnids.txt", [wnids[i] for i in _permutation(seed, name, "wnids", len(wnids))])  # real: unsorted
    _text(dest / "words.txt", ["n00001740\tentity"] + [f"{w}\t{words}" for w, words in classes])  # real: all WordNet


def write_imagenet_1k(dest: Path, size: str, seed: int) -> None:
    """ILSVRC2012 with the validation images sorted into class folders: train/<wnid>/<wnid>_<n>.JPEG,
    val/<wnid>/ILSVRC2012_val_<i:08d>.JPEG (i numbered across classes), LOC_synset_mapping.txt ("<wnid> <names>")."""
    name, spec = "imagenet-1k", SIZES[size]
    classes = IMAGENET[: spec["classes"]]
    numbers = _permutation(seed, name, "val", len(classes) * spec["test"])  # 0-based val image numbers
    for c, (wnid, _) in enumerate(classes):
        ns = sorted(_permutation(seed, name, wnid, 40 * spec["train"])[: spec["train"]])  # sparse: n01440764_10026
        for k, n in enumerate(ns):
            path = dest / "train" / wnid / f"{wnid}_{n + 1}.JPEG"
            _image(path, name, "train", c, k, size, seed, gray=(c, k) == (1, 0))
        for k in range(spec["test"]):
            i = numbers[c * spec["test"] + k] + 1
            _image(dest / "val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", name, "val", c, k, size, seed)
    _text(dest / "LOC_synset_mapping.txt", [f"{w} {words}" for w, words in classes])


# ---------------------------------------------------------------- Flowers-102 and Stanford Cars: .mat annotations
def write_flowers102(dest: Path, size: str, seed: int) -> None:
    """flowers-102/{jpg/image_<i:05d>.jpg, imagelabels.mat, setid.mat}: "labels" (1, N), the 1-based class of images
    1..N; "trnid", "valid", "tstid" (1, n), 1-based image numbers; as the official files, which torchvision's
    datasets/flowers102.py reads with scipy's loadmat."""
    name, spec, base = "flowers102", SIZES[size], dest / "flowers-102"
    per_split = dict(zip(("trnid", "valid", "tstid"), spec["flowers"]))
    items = [(key, c, k) for c in range(spec["flowers_classes"]) for key, n in per_split.items() for k in range(n)]
    items = [items[i] for i in _permutation(seed, name, "numbers", len(items))]  # a class's images are not adjacent
    for i, (key, c, k) in enumerate(items, 1):
        _image(base / "jpg" / f"image_{i:05d}.jpg", name, key, c, k, size, seed)
    _savemat(base / "imagelabels.mat", {"labels": np.array([[c + 1 for _, c, _ in items]], dtype=np.uint8)})  # (1, N)
    split_ids = {key: [i for i, (s, _, _) in enumerate(items, 1) if s == key] for key in per_split}
    _savemat(base / "setid.mat", {key: np.array([ids], dtype=np.uint16) for key, ids in split_ids.items()})  # (1, n)


CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")  # cars_*_annos.mat, in this order


def _cars_annotations(rows: list[tuple[int, int, int]]) -> np.ndarray:
    """(1, N) MATLAB struct array for images 00001.jpg..: rows are (class 0-based, width, height)."""
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in CARS_FIELDS])
    for i, (c, w, h) in enumerate(rows):
        box = (1 + w // 10, 1 + h // 10, w - w // 10, h - h // 10)  # x1, y1, x2, y2: 1-based px, MATLAB style
        for f, v in zip(CARS_FIELDS[:4], box):
            ann[f][0, i] = np.array([[v]], dtype=np.uint16)
        ann["class"][0, i] = np.array([[c + 1]], dtype=np.uint8)  # 1-based; torchvision subtracts 1
        ann["fname"][0, i] = f"{i + 1:05d}.jpg"
    return ann


def write_stanford_cars(dest: Path, size: str, seed: int) -> None:
    """torchvision's StanfordCars layout (datasets/stanford_cars.py): stanford_cars/devkit/{cars_meta.mat,
    cars_train_annos.mat}, cars_train/<i:05d>.jpg, cars_test_annos_withlabels.mat, cars_test/<i:05d>.jpg."""
    name, spec, base = "stanford-cars", SIZES[size], dest / "stanford_cars"
    names = STANFORD_CARS[: spec["classes"]]
    annotations = {"train": base / "devkit" / "cars_train_annos.mat", "test": base / "cars_test_annos_withlabels.mat"}
    (base / "devkit").mkdir(parents=True)
    for split, mat in annotations.items():
        items = [(c, k) for c in range(len(names)) for k in range(spec[split])]
        items = [items[i] for i in _permutation(seed, name, split, len(items))]  # numbered across classes
        rows = []
        for i, (c, k) in enumerate(items, 1):
            rows.append((c, *_image(base / f"cars_{split}" / f"{i:05d}.jpg", name, split, c, k, size, seed)))
        _savemat(mat, {"annotations": _cars_annotations(rows)})
    _savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})  # (1, C) cell


# ---------------------------------------------------------------- CUB-200-2011 and Caltech-101: class folders
def write_cub_200_2011(dest: Path, size: str, seed: int) -> None:
    """CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, bounding_boxes.txt,
    images/<NNN.Class_name>/<Class_Name>_<n:04d>_<photo>.jpg}: ids 1..N, class by class, each class's images
    ordered by photo number; the official split mixes train (1) and test (0) within a class."""
    name, spec, base = "cub-200-2011", SIZES[size], dest / "CUB_200_2011"
    n = spec["train"] + spec["test"]
    rows = []  # (relative path, class 1-based, is_train, width, height) in id order
    for c, folder in enumerate(CUB[: spec["classes"]]):
        stem = "_".join(w[:1].upper() + w[1:] for w in folder.split(".", 1)[1].split("_"))  # Black_Footed_Albatross
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), c])
        numbers = rng.choice(np.arange(1, 140), n, replace=False)  # per-class photo numbers, not contiguous
        photos = np.sort(rng.choice(800_000, n, replace=False))  # the trailing id, which orders images.txt
        train = set(_permutation(seed, name, folder, n)[: spec["train"]])
        for k in range(n):
            rel = f"{folder}/{stem}_{numbers[k]:04d}_{photos[k] + 1}.jpg"
            w, h = _image(base / "images" / rel, name, "images", c, k, size, seed, gray=(c, k) == (1, 0))
            rows.append((rel, c + 1, int(k in train), w, h))
    ids = range(1, len(rows) + 1)
    _text(base / "images.txt", [f"{i} {r[0]}" for i, r in zip(ids, rows)])
    _text(base / "image_class_labels.txt", [f"{i} {r[1]}" for i, r in zip(ids, rows)])
    _text(base / "train_test_split.txt", [f"{i} {r[2]}" for i, r in zip(ids, rows)])
    _text(base / "classes.txt", [f"{c} {folder}" for c, folder in enumerate(CUB[: spec["classes"]], 1)])
    boxes = [f"{i} {r[3] / 8:.1f} {r[4] / 8:.1f} {r[3] * 3 / 4:.1f} {r[4] * 3 / 4:.1f}" for i, r in zip(ids, rows)]
    _text(base / "bounding_boxes.txt", boxes)  # <id> <x> <y> <width> <height> in px


def write_caltech101(dest: Path, size: str, seed: int) -> None:
    """caltech101/101_ObjectCategories/<class>/image_<k:04d>.jpg, numbered from 1 in each class folder, with the
    BACKGROUND_Google folder that torchvision's Caltech101 drops. The kit splits each class 80/20 (no official
    split), so a class gets train / 0.8 images: tiny 5 (4 train, 1 test), full 40 (32 train, 8 test)."""
    name, spec = "caltech101", SIZES[size]
    folder = dest / "caltech101" / "101_ObjectCategories"
    n = round(spec["train"] / (1 - CALTECH101_TEST_FRACTION))
    for k in range(n):
        _image(folder / "BACKGROUND_Google" / f"image_{k + 1:04d}.jpg", name, "background", 0, k, size, seed)
    for c, cls in enumerate(CALTECH101[: spec["classes"]]):
        for k in range(n):  # many real Caltech-101 images are grayscale
            _image(folder / cls / f"image_{k + 1:04d}.jpg", name, "images", c, k, size, seed, gray=(c, k) == (1, 0))


# ---------------------------------------------------------------- all of them
WRITERS: dict[str, Callable[[Path, str, int], None]] = {
    "cifar100": write_cifar100,
    "tiny-imagenet-200": write_tiny_imagenet,
    "imagenet-1k": write_imagenet_1k,
    "flowers102": write_flowers102,
    "cub-200-2011": write_cub_200_2011,
    "stanford-cars": write_stanford_cars,
    "caltech101": write_caltech101,
}


def _marker(root: Path, name: str) -> Path:
    # Beside the dataset folder, not in it: the kit's folder scans would list a file inside as skipped.
    return root / f".complete-{name}"


def _kept(dest: Path, marker: Path, want: dict) -> bool:
    """True if `dest` is a complete stand-in of this size and seed; refuses any other folder at `dest`."""
    if not dest.exists():
        return False
    try:
        have = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if not isinstance(have, dict):
        raise ValueError(
            f"{dest} exists but is not a stand-in dataset written by write_datasets (no {marker.name} beside it): "
            f"pass another folder or delete it"
        )
    if have != want:
        raise ValueError(
            f"{dest} holds a stand-in dataset of size={have.get('size')!r} seed={have.get('seed')} "
            f"layout={have.get('layout')}, not size={want['size']!r} seed={want['seed']} layout={want['layout']}: "
            f"pass another folder or delete it"
        )
    return True


def write_datasets(
    root: str | Path,
    size: str = "tiny",
    seed: int = 0,
    names: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write `<root>/<name>/` for each of `names` (default: every paper dataset) and return {name: its root}, the
    folder to pass as that dataset's --data-root.

    Each dataset is written into a hidden sibling and renamed into place once complete, after its marker
    `<root>/.complete-<name>` (size, seed, layout); a complete one is kept, so a re-run is fast; a folder of
    another size or seed, or one not written here, is refused. `progress(line)` gets one line per dataset.
    """
    if size not in SIZES:
        raise ValueError(f"size={size!r}: expected one of {', '.join(SIZES)}")
    if type(seed) is not int or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an integer >= 0")
    names = list(PAPER_DATASETS) if names is None else list(names)
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ValueError(f"unknown dataset {unknown[0]!r}; known: {', '.join(WRITERS)}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    want = {"kind": "diffcore-rehearsal-dataset", "size": size, "seed": seed, "layout": LAYOUT_VERSION}
    out = {}
    for name in names:
        dest, marker = root / name, _marker(root, name)
        out[name] = dest
        if _kept(dest, marker, want):
            if progress:
                progress(f"data: {name} is there, kept")
            continue
        t0 = time.perf_counter()
        tmp = root / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        tmp.mkdir()
        WRITERS[name](tmp, size, seed)
        marker.write_text(json_text(want) + "\n", encoding="utf-8")  # first: a set counts as there only with both
        os.replace(tmp, dest)
        if progress:
            files = sum(1 for p in dest.rglob("*") if p.is_file())
            progress(f"data: wrote {name} ({size}, {files} files) in {time.perf_counter() - t0:.1f} s")
    return out
