"""diffcore.rehearse.datasets: the tiny stand-in of every paper dataset, read by the kit's own, unpatched readers."""

from __future__ import annotations

import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from diffcore import data as D
from diffcore.prompts import label_words
from diffcore.rehearse import datasets as R

TINY = R.SIZES["tiny"]
SPLITS = [(name, split) for name, spec in D.PAPER_DATASETS.items() for split in spec["splits"]]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    return R.write_datasets(tmp_path_factory.mktemp("data"), "tiny", seed=0)


def _classes(name: str) -> int:
    return TINY["flowers_classes"] if name == "flowers102" else TINY["classes"]


def _class_names(name: str) -> list[str]:
    """What the reader must call the stand-in's classes: the real datasets' first names, as the kit words them."""
    n = _classes(name)
    if name == "flowers102":
        from torchvision.datasets import Flowers102

        return Flowers102.classes[:n]
    first_synonym = [
        words.split(",")[0] for _, words in (R.TINY_IMAGENET if name == "tiny-imagenet-200" else R.IMAGENET)
    ]
    return {
        "cifar100": [label_words(f) for f, _ in R.CIFAR100_FINE],
        "tiny-imagenet-200": first_synonym,
        "imagenet-1k": first_synonym,
        "cub-200-2011": [label_words(c) for c in R.CUB],
        "stanford-cars": R.STANFORD_CARS,
        "caltech101": [label_words(c) for c in R.CALTECH101],
    }[name][:n]


def _per_class(name: str, split: str) -> int:
    if name == "flowers102":
        return dict(zip(("train", "val", "test"), TINY["flowers"]))[split]
    if name == "caltech101":  # the kit's 80/20 split of train / 0.8 images per class
        return TINY["train"] if split == "train" else round(TINY["train"] / 0.8) - TINY["train"]
    return TINY["train"] if split == "train" else TINY["test"]


def _sizes_ok(name: str, size: tuple[int, int]) -> bool:
    if name in R.FIXED_RESOLUTION:
        return size == R.FIXED_RESOLUTION[name]
    lo, hi = TINY["side"]
    return lo <= min(size) and max(size) <= hi


@pytest.mark.parametrize("name,split", SPLITS)
def test_the_kit_reads_every_split_as_the_real_dataset(written, name, split):
    ds = D.open_dataset(name, str(written[name]), split)  # verifies every file, as a real run does
    assert ds.classes == _class_names(name)
    assert ds.class_counts().tolist() == [_per_class(name, split)] * _classes(name)
    if (name, split) == ("tiny-imagenet-200", "train"):  # the real archive has a <wnid>_boxes.txt per class too
        boxes = [written[name] / "train" / w / f"{w}_boxes.txt" for w, _ in R.TINY_IMAGENET[: TINY["classes"]]]
        assert [Path(p) for p, _ in ds.skipped] == boxes
    else:
        assert ds.skipped == []
    images = [ds.load(i) for i in range(len(ds))]
    assert all(im.mode == "RGB" and _sizes_ok(name, im.size) for im in images), {im.size for im in images}
    assert len(set(ds.ids)) == len(ds) and all(i.startswith(f"{name}/{split}/") for i in ds.ids)


@pytest.mark.parametrize("name", list(D.PAPER_DATASETS))
def test_train_and_evaluation_split_name_the_same_classes(written, name):
    train, test = D.open_train_test(name, str(written[name]))
    assert train.classes == test.classes and not set(train.ids) & set(test.ids)


def test_flowers_train_is_the_ten_per_class_of_table_2(written):
    ds = D.open_dataset("flowers102", str(written["flowers102"]), "train", shots=10, seed=3)
    assert ds.class_counts().tolist() == [10] * TINY["flowers_classes"]


def test_cifar_pickles_are_python2_protocol_2_naming_only_the_official_globals(written):
    base = written["cifar100"] / "cifar-100-python"
    for f in ("train", "test", "meta"):
        raw = (base / f).read_bytes()
        ops = list(pickletools.genops(raw))
        assert raw[:2] == b"\x80\x02"  # PROTO 2
        assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} <= {
            "numpy.core.multiarray _reconstruct",
            "numpy ndarray",
            "numpy dtype",
        }
        assert not {op.name for op, _, _ in ops} & {"BINUNICODE", "STACK_GLOBAL", "BINBYTES"}  # Python 3's opcodes
        entry = pickle.loads(raw, encoding="latin1")  # as torchvision's datasets/cifar.py reads the real ones
        assert set(entry) == (
            {"fine_label_names", "coarse_label_names"}
            if f == "meta"
            else {"data", "fine_labels", "coarse_labels", "filenames", "batch_label"}
        )
    entry = pickle.loads((base / "train").read_bytes(), encoding="latin1")
    ds = D.paper_dataset("cifar100", written["cifar100"], "train")
    hwc = entry["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # torchvision's arrangement: (N, 32, 32, 3)
    assert ds.labels == entry["fine_labels"] and np.array_equal(np.asarray(ds.load(5)), hwc[5])
    assert [R.CIFAR100_COARSE[c] for c in entry["coarse_labels"]] == [R.CIFAR100_FINE[c][1] for c in ds.labels]


def test_flowers_mat_files_read_the_same_through_torchvision(written):
    from torchvision.datasets import Flowers102

    class Unchecked(Flowers102):  # torchvision's reader without the md5 check only the official files pass
        def _check_integrity(self):
            return True

    for split in ("train", "val", "test"):
        ours, theirs = (
            D.paper_dataset("flowers102", written["flowers102"], split),
            Unchecked(str(written["flowers102"]), split=split),
        )
        assert ours.paths == [str(p) for p in theirs._image_files] and ours.labels == theirs._labels


def test_nothing_hidden_inside_a_dataset_root(written):
    for name, root in written.items():
        assert not [p for p in root.rglob(".*")], name  # markers and partial folders live beside the roots
        assert (root.parent / f".complete-{name}").is_file()


def _contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(written, tmp_path):
    names = ["cifar100", "flowers102", "stanford-cars"]  # a pickle, .mat files, JPEGs
    again = R.write_datasets(tmp_path / "again", "tiny", seed=0, names=names)
    other = R.write_datasets(tmp_path / "other", "tiny", seed=1, names=names)
    for name in names:
        assert _contents(again[name]) == _contents(written[name]), name  # every byte, .mat headers included
        ids = {s: D.paper_dataset(name, again[name], s).ids for s in D.PAPER_DATASETS[name]["splits"]}
        assert ids == {s: D.paper_dataset(name, written[name], s).ids for s in D.PAPER_DATASETS[name]["splits"]}
    jpg = "stanford_cars/cars_train/00001.jpg"
    assert _contents(other["stanford-cars"])[jpg] != _contents(written["stanford-cars"])[jpg]


def test_a_complete_set_is_kept_and_a_different_one_refused(tmp_path):
    lines = []
    R.write_datasets(tmp_path, "tiny", 0, names=["caltech101"], progress=lines.append)
    image = tmp_path / "caltech101" / "caltech101" / "101_ObjectCategories" / "Faces" / "image_0001.jpg"
    stamp = image.stat().st_mtime_ns
    R.write_datasets(tmp_path, "tiny", 0, names=["caltech101"], progress=lines.append)
    assert lines[0].startswith("data: wrote caltech101 (tiny, ") and lines[1] == "data: caltech101 is there, kept"
    assert image.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"caltech101 holds a stand-in dataset of size='tiny' seed=0 .*not .*seed=1"):
        R.write_datasets(tmp_path, "tiny", 1, names=["caltech101"])
    (tmp_path / "cub-200-2011").mkdir()  # someone's folder: never written into
    with pytest.raises(
        ValueError, match=r"cub-200-2011 exists but is not a stand-in dataset .*\.complete-cub-200-2011"
    ):
        R.write_datasets(tmp_path, "tiny", 0, names=["cub-200-2011"])
    assert list((tmp_path / "cub-200-2011").iterdir()) == []


def test_a_killed_write_leaves_nothing_that_counts(tmp_path):
    partial = tmp_path / ".caltech101.partial"
    (partial / "junk").mkdir(parents=True)  # what a killed run leaves
    R.write_datasets(tmp_path, "tiny", 0, names=["caltech101"])
    assert not partial.exists() and (tmp_path / "caltech101" / "caltech101").is_dir()


def test_bad_arguments_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="size='huge': expected one of tiny, full"):
        R.write_datasets(tmp_path, "huge")
    with pytest.raises(ValueError, match=r"seed=-1: expected an integer >= 0"):
        R.write_datasets(tmp_path, "tiny", -1)
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; known: cifar100, "):
        R.write_datasets(tmp_path, "tiny", names=["cifar10"])
    assert list(tmp_path.iterdir()) == []
