"""diffcore.data on tiny fake dataset roots written into tmp_path (8x8 images, fake metadata); nothing downloads."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcore import data as D

SIZE = 8  # px: every fake image is 8x8


def _img(path: Path, mode: str = "RGB", color=(200, 30, 60)) -> Path:
    """Write one SIZE x SIZE image of a single colour; the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (SIZE, SIZE), color).save(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ---------------------------------------------------------------- image_folder
@pytest.fixture
def pets(tmp_path) -> Path:
    root = tmp_path / "pets"
    _img(root / "cat" / "b.JPG")  # upper-case extension still counts
    _img(root / "cat" / "a.png")
    _img(root / "cat" / "sub" / "c.jpeg")  # nested, as torchvision's ImageFolder
    _write(root / "cat" / "notes.txt", "not an image")
    _img(root / "cat" / ".hidden.png")  # e.g. macOS ._ files
    _img(root / "dog" / "gray.png", "L", 77)
    _img(root / "dog" / "rgba.png", "RGBA", (10, 20, 30, 0))
    _img(root / "dog" / "cmyk.jpg", "CMYK", (0, 0, 0, 0))
    _img(root / ".ipynb_checkpoints" / "x.png")  # Jupyter droppings are not a class
    _write(root / "README.md", "top-level file")
    return root


def test_image_folder_classes_labels_ids_and_ignored_files(pets):
    ds = D.image_folder(pets)
    assert ds.name == "pets" and ds.classes == ["cat", "dog"] and ds.dataset_type == "natural"
    assert ds.ids == [
        "pets/cat/a.png",
        "pets/cat/b.JPG",
        "pets/cat/sub/c.jpeg",
        "pets/dog/cmyk.jpg",
        "pets/dog/gray.png",
        "pets/dog/rgba.png",
    ]
    assert ds.labels == [0, 0, 0, 1, 1, 1]
    assert ds.path(0) == str(pets / "cat" / "a.png")
    assert ds.skipped == [  # not read, but listed with the reason (run.json, result files), never dropped unseen
        (str(pets / ".ipynb_checkpoints"), D.HIDDEN_CLASS.format(n=1)),
        (str(pets / "README.md"), D.OUTSIDE_CLASSES),
        (str(pets / "cat" / ".hidden.png"), D.HIDDEN_FILE),
        (str(pets / "cat" / "notes.txt"), D.IMAGE_SUFFIX_REASON.format(suffix="'.txt'")),
    ]


def _tree_with_everything(root: Path) -> None:
    """Both splits of a folder dataset with every kind of entry that is not a class image."""
    for split in ("train", "test"):
        for cls in ("cat", "dog", ".dotted"):  # a dot-named class folder with four valid images
            for k in range(4):
                _img(root / split / cls / f"{k}.png", color=(k * 40, 10, 10))
        _write(root / split / "cat" / "notes.txt", "x")
        _write(root / split / "cat" / ".DS_Store", "x")
        _img(root / split / "dog" / ".ipynb_checkpoints" / "0-checkpoint.png")
        _write(root / split / "README.md", "x")
        (root / split / "empty").mkdir()
        _write(root / split / "labels-only" / "labels.csv", "x")
        _write(root / split / "cat" / "broken.png", "")
    _img(root / "val" / "cat" / "0.png")  # evaluation split not used when test/ is there
    _write(root / "LICENSE", "x")


def test_every_file_and_folder_under_a_data_root_is_read_or_listed_with_its_reason(tmp_path, caplog):
    import logging

    root = tmp_path / "data"
    _tree_with_everything(root)
    with caplog.at_level(logging.WARNING):
        train, test = D.open_train_test("folder", str(root))
    read = {Path(ds.path(i)) for ds in (train, test) for i in range(len(ds))}
    listed = {Path(p): why for ds in (train, test) for p, why in ds.skipped}
    assert len(listed) == len(train.skipped) + len(test.skipped)  # each entry listed once, in one split
    for p in sorted(root.rglob("*")):
        under_listed = [q for q in listed if q == p or q in p.parents]
        holds_read = p.is_dir() and any(p in f.parents for f in read)
        assert (p in read) + bool(under_listed) + holds_read == 1, p  # read, listed, or a folder of what is read
    for split, ds in (("train", train), ("test", test)):
        assert listed[root / split / ".dotted"] == D.HIDDEN_CLASS.format(n=4) and ds.classes == ["cat", "dog"]
        assert listed[root / split / "dog" / ".ipynb_checkpoints"] == D.HIDDEN_FOLDER
        assert listed[root / split / "cat" / "broken.png"] == "empty file"
        assert D.skipped_summary(ds)["count"] == 9 == len(D.skipped_summary(ds)["entries"])
    assert listed[root / "val"].startswith("evaluation split not read") and root / "LICENSE" in listed
    hidden = [r.getMessage() for r in caplog.records if ".dotted" in r.getMessage()]
    assert len(hidden) == 2 and all("skipped 1: hidden folder, not read (image files in it: 4;" in m for m in hidden)


def test_image_folder_loads_rgb_from_gray_rgba_cmyk(pets):
    ds = D.image_folder(pets)
    images = {i: ds.load(k) for k, i in enumerate(ds.ids)}
    assert all(im.mode == "RGB" and im.size == (SIZE, SIZE) for im in images.values())
    assert np.asarray(images["pets/dog/gray.png"])[0, 0].tolist() == [77, 77, 77]
    assert np.asarray(images["pets/dog/rgba.png"])[0, 0].tolist() == [10, 20, 30]  # alpha dropped
    assert np.asarray(images["pets/dog/cmyk.jpg"])[0, 0].tolist() == [255, 255, 255]  # no ink = white


def test_image_folder_class_order_is_plain_sorted(tmp_path):
    for cls in ["b", "a", "C", "a10", "a2"]:
        _img(tmp_path / "r" / cls / "x.png")
    ds = D.image_folder(tmp_path / "r")
    assert ds.classes == ["C", "a", "a10", "a2", "b"]  # string order, as torchvision's ImageFolder
    assert ds.labels == [0, 1, 2, 3, 4]


def test_image_folder_ids_do_not_depend_on_location(pets, tmp_path):
    copy = shutil.copytree(pets, tmp_path / "elsewhere" / "copy")
    assert D.image_folder(copy, name="pets").ids == D.image_folder(pets).ids
    assert D.image_folder(pets).ids == D.image_folder(pets).ids


def test_image_folder_errors_name_path_layout_and_fix(tmp_path):
    layout = r"expected <root>/<class>/<image>\.jpg"
    with pytest.raises(FileNotFoundError, match=rf"no directory at .*missing; {layout}.*Pass the folder"):
        D.image_folder(tmp_path / "missing")
    _write(tmp_path / "flat" / "a.txt", "x")
    _img(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match=rf"no class folders in .*flat; {layout}.*one sub-folder per class"):
        D.image_folder(tmp_path / "flat")
    _write(tmp_path / "r" / "empty_cls" / "labels.csv", "x")
    with pytest.raises(ValueError, match=rf"no class folder in .*r holds images .*; {layout}"):
        D.image_folder(tmp_path / "r")
    _img(tmp_path / "r" / "cat" / "a.png")  # a class folder without images beside it is skipped, not fatal
    ds = D.image_folder(tmp_path / "r")
    assert ds.classes == ["cat"] and ds.skipped == [
        (str(tmp_path / "r" / "empty_cls"), "class folder without image files")
    ]


# ---------------------------------------------------------------- paper datasets: errors
@pytest.mark.parametrize("name", list(D.PAPER_DATASETS))
def test_paper_dataset_missing_root_is_one_line(name, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        D.paper_dataset(name, tmp_path / "nothing")
    msg = str(e.value)
    assert msg.startswith(f"{name}: no data at {tmp_path / 'nothing'}; expected ")
    assert msg.endswith("Download it yourself and pass --data-root <dir>") and "\n" not in msg
    assert "download=True" not in msg  # torchvision's advice never leaks through


@pytest.mark.parametrize("name", list(D.PAPER_DATASETS))
def test_paper_dataset_empty_root_fails_without_writing(name, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^{name}: no data at {tmp_path}/\S+; expected "):
        D.paper_dataset(name, tmp_path, D.PAPER_DATASETS[name]["splits"][-1])
    assert _files(tmp_path) == set()  # torchvision's Caltech101 would have created root/caltech101


def test_paper_dataset_unknown_name_and_split(tmp_path):
    with pytest.raises(
        ValueError,
        match="unknown dataset 'cifar10'; known: cifar100, tiny-imagenet-200, "
        "imagenet-1k, flowers102, cub-200-2011, stanford-cars, caltech101",
    ):
        D.paper_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError, match="cifar100: split='val'; expected one of train, test"):
        D.paper_dataset("cifar100", tmp_path, "val")


def test_paper_datasets_spec_is_complete():
    for name, spec in D.PAPER_DATASETS.items():
        assert set(spec) == {"layout", "splits", "num_classes", "image_size", "tables"}, name
        assert name in D._READERS


# ---------------------------------------------------------------- CIFAR-100 (pickles in the official format)
CIFAR_NAMES = ["apple", "aquarium_fish", "bear"]


def _cifar_pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)  # the official files' protocol (they were written by Python 2's cPickle)


def _fake_cifar100(root: Path) -> dict[str, np.ndarray]:
    """cifar-100-python/{train,test,meta} with the official keys; returns the (N, 32, 32, 3) images of each split."""
    rng = np.random.default_rng(0)
    images = {
        "train": rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
        "test": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
    }
    labels = {"train": [2, 0, 1, 2, 0], "test": [1, 0]}
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    for split, x in images.items():
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # (N, 3*32*32), channel-major as the real files
        entry = {
            "data": rows,
            "fine_labels": labels[split],
            "coarse_labels": [0] * len(x),
            "filenames": [f"x_{i}.png" for i in range(len(x))],
            "batch_label": f"{split}ing batch 1 of 1",
        }
        (base / split).write_bytes(_cifar_pickle(entry))
    (base / "meta").write_bytes(_cifar_pickle({"fine_label_names": CIFAR_NAMES, "coarse_label_names": ["a"]}))
    return images


def test_cifar100_reads_arrays_with_stable_ids(tmp_path):
    images = _fake_cifar100(tmp_path)
    ds = D.paper_dataset("cifar100", tmp_path, "train")
    assert ds.classes == ["apple", "aquarium fish", "bear"]
    assert ds.ids == [f"cifar100/train/{i:05d}" for i in range(5)] and ds.labels == [2, 0, 1, 2, 0]
    im = ds.load(3)
    assert im.mode == "RGB" and np.array_equal(np.asarray(im), images["train"][3])
    test = D.paper_dataset("cifar100", tmp_path, "test")
    assert test.ids == ["cifar100/test/00000", "cifar100/test/00001"] and test.labels == [1, 0]
    assert np.array_equal(np.asarray(test.load(1)), images["test"][1])


def _one_line(e: pytest.ExceptionInfo, start: str) -> None:
    msg = str(e.value)
    assert msg.startswith(start), msg
    assert msg.endswith("Download it yourself and pass --data-root <dir>") and "\n" not in msg


@pytest.mark.parametrize("split", ["train", "meta"])
def test_cifar100_truncated_pickle_is_one_line(tmp_path, split):
    _fake_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / split
    path.write_bytes(path.read_bytes()[:-40])  # an interrupted download or copy
    with pytest.raises(FileNotFoundError) as e:
        D.paper_dataset("cifar100", tmp_path, "train")
    _one_line(e, f"cifar100: no data at {path} (truncated or not a CIFAR-100 python pickle: ")


@pytest.mark.parametrize("split", ["train", "meta"])
def test_cifar100_pickle_naming_another_global_is_refused_unrun(tmp_path, split):
    import os

    from hostile import RunsAShellCommand

    _fake_cifar100(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-100-python" / split
    path.write_bytes(_cifar_pickle({"data": RunsAShellCommand(marker), "fine_label_names": RunsAShellCommand(marker)}))
    with pytest.raises(FileNotFoundError) as e:
        D.paper_dataset("cifar100", tmp_path, "train")
    system = f"{os.system.__module__}.system"  # posix.system on Linux and macOS
    _one_line(e, f"cifar100: no data at {path} (refused: the pickle names {system}, which the official files never do")
    assert not marker.exists()  # the shell command never ran


def test_cifar100_content_the_official_files_never_have_is_one_line(tmp_path):
    _fake_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    start = f"cifar100: no data at {train} (truncated or not a CIFAR-100 python pickle: "
    for entry, why in [
        ({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 3]}, "a label is not a class index 0..2)"),
        ({"data": np.zeros((2, 3072), np.float32), "fine_labels": [0, 1]}, "'data' is not an (N, 3072) uint8 array)"),
        ({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0]}, "'fine_labels' is not a list of 2 labels)"),
        ({"data": np.zeros((2, 3072), np.uint8)}, "no 'fine_labels' entry)"),
        ([1, 2], "no 'data' entry)"),
    ]:
        train.write_bytes(_cifar_pickle(entry))
        with pytest.raises(FileNotFoundError) as e:
            D.paper_dataset("cifar100", tmp_path, "train")
        _one_line(e, start + why)
    train.write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        D.paper_dataset("cifar100", tmp_path, "train")
    _one_line(e, start + "EOFError)")


# ---------------------------------------------------------------- Tiny-ImageNet-200
GOLDFISH, SALAMANDER = "n01443537", "n01629819"


@pytest.fixture
def tiny(tmp_path) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    for w in (SALAMANDER, GOLDFISH):
        for i in range(2):
            _img(root / "train" / w / "images" / f"{w}_{i}.JPEG")
        _write(root / "train" / w / f"{w}_boxes.txt", "boxes, not an image")
    rows = [("val_0.JPEG", SALAMANDER), ("val_1.JPEG", GOLDFISH), ("val_2.JPEG", SALAMANDER)]
    for f, _ in rows:
        _img(root / "val" / "images" / f, *(("L", 120) if f == "val_1.JPEG" else ()))
    _write(root / "val" / "val_annotations.txt", "".join(f"{f}\t{w}\t0\t0\t7\t7\n" for f, w in rows))
    _write(
        root / "words.txt",
        f"n00001740\tentity\n{GOLDFISH}\tgoldfish, Carassius auratus\n"
        f"{SALAMANDER}\tEuropean fire salamander, Salamandra salamandra\n",
    )
    return root


def test_tiny_imagenet_train_and_val(tiny):
    train = D.paper_dataset("tiny-imagenet-200", tiny, "train")
    assert train.classes == ["goldfish", "European fire salamander"]  # sorted wnids, first synonym
    assert train.labels == [0, 0, 1, 1]
    assert train.ids[0] == f"tiny-imagenet-200/train/{GOLDFISH}/images/{GOLDFISH}_0.JPEG"
    val = D.paper_dataset("tiny-imagenet-200", tiny, "val")
    assert val.classes == train.classes
    assert val.ids == [
        f"tiny-imagenet-200/val/{GOLDFISH}/images/val_1.JPEG",
        f"tiny-imagenet-200/val/{SALAMANDER}/images/val_0.JPEG",
        f"tiny-imagenet-200/val/{SALAMANDER}/images/val_2.JPEG",
    ]
    assert val.labels == [0, 1, 1] and val.load(0).mode == "RGB"


def test_tiny_imagenet_without_words_uses_wnids(tiny):
    (tiny / "words.txt").unlink()
    assert D.paper_dataset("tiny-imagenet-200", tiny, "val").classes == [GOLDFISH, SALAMANDER]


def test_tiny_imagenet_val_reorganisation(tiny):
    outside = _img(tiny.parent / "sibling" / "keep.png")
    before = D.paper_dataset("tiny-imagenet-200", tiny, "val")
    pixels = [np.asarray(before.load(i)) for i in range(len(before))]
    assert D.reorganize_tiny_imagenet_val(tiny) == 3
    assert {p for p in _files(tiny / "val")} == {
        "val_annotations.txt",
        GOLDFISH,
        f"{GOLDFISH}/images",
        f"{GOLDFISH}/images/val_1.JPEG",
        SALAMANDER,
        f"{SALAMANDER}/images",
        f"{SALAMANDER}/images/val_0.JPEG",
        f"{SALAMANDER}/images/val_2.JPEG",
    }
    snapshot = _files(tiny.parent)
    assert D.reorganize_tiny_imagenet_val(tiny) == 0  # idempotent
    assert _files(tiny.parent) == snapshot and outside.is_file()
    after = D.paper_dataset("tiny-imagenet-200", tiny, "val")
    assert after.ids == before.ids and after.labels == before.labels and after.paths != before.paths
    assert all(np.array_equal(pixels[i], np.asarray(after.load(i))) for i in range(len(after)))
    (tiny / "val" / "val_annotations.txt").unlink()  # the reorganised folders alone carry the labels
    alone = D.paper_dataset("tiny-imagenet-200", tiny, "val")
    assert alone.ids == before.ids and alone.labels == before.labels


def test_tiny_imagenet_interrupted_reorganisation_reads_and_resumes(tiny):
    before = D.paper_dataset("tiny-imagenet-200", tiny, "val")
    (tiny / "val" / SALAMANDER / "images").mkdir(parents=True)
    (tiny / "val" / "images" / "val_0.JPEG").rename(tiny / "val" / SALAMANDER / "images" / "val_0.JPEG")
    half = D.paper_dataset("tiny-imagenet-200", tiny, "val")
    assert half.ids == before.ids and half.labels == before.labels
    assert D.reorganize_tiny_imagenet_val(tiny) == 2


def test_tiny_imagenet_val_errors(tiny):
    _write(tiny / "val" / "val_annotations.txt", f"../../evil.JPEG\t{GOLDFISH}\t0\t0\t7\t7\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt: entry '\.\./\.\./evil\.JPEG' is not a plain"):
        D.reorganize_tiny_imagenet_val(tiny)
    _write(tiny / "val" / "val_annotations.txt", "val_0.JPEG\tn99999999\t0\t0\t7\t7\n")
    with pytest.raises(ValueError, match=r"val classes \['n99999999'\] have no folder in .*train"):
        D.paper_dataset("tiny-imagenet-200", tiny, "val")
    (tiny / "val" / "val_annotations.txt").unlink()  # original layout without labels
    with pytest.raises(FileNotFoundError, match=r"no data at .*val_annotations\.txt; expected"):
        D.paper_dataset("tiny-imagenet-200", tiny, "val")


def test_tiny_imagenet_annotation_without_tabs_is_one_line(tiny):
    _write(tiny / "val" / "val_annotations.txt", f"val_0.JPEG\t{GOLDFISH}\t0\t0\t7\t7\nval_1.JPEG {GOLDFISH} 0 0 7 7\n")
    with pytest.raises(ValueError, match=r"val_annotations\.txt: entry 2 is not '<file> TAB <wnid> TAB \.\.\.'; fix"):
        D.paper_dataset("tiny-imagenet-200", tiny, "val")  # was an IndexError


# ---------------------------------------------------------------- ImageNet-1K (ImageFolder)
def test_imagenet_1k_image_folder_with_synset_names(tmp_path):
    for split in ("train", "val"):
        for w in ("n01443537", "n01440764"):
            _img(tmp_path / split / w / f"{split}_{w}.JPEG")
    _write(tmp_path / "LOC_synset_mapping.txt", "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    val = D.paper_dataset("imagenet-1k", tmp_path, "val")
    assert val.classes == ["tench", "goldfish"] and val.labels == [0, 1]
    assert val.ids == ["imagenet-1k/val/n01440764/val_n01440764.JPEG", "imagenet-1k/val/n01443537/val_n01443537.JPEG"]
    _img(tmp_path / "val" / "n09999999" / "x.JPEG")
    with pytest.raises(ValueError, match="class folders of .*val and .*train differ"):
        D.paper_dataset("imagenet-1k", tmp_path, "val")


# ---------------------------------------------------------------- CUB-200-2011
@pytest.fixture
def cub(tmp_path) -> Path:
    base = tmp_path / "CUB_200_2011"
    files = [
        "002.Laysan_Albatross/L_1.jpg",
        "001.Black_footed_Albatross/B_1.jpg",
        "001.Black_footed_Albatross/B_2.jpg",
        "002.Laysan_Albatross/L_2.jpg",
    ]
    for f in files:
        _img(base / "images" / f)
    _write(base / "images.txt", "".join(f"{i} {f}\n" for i, f in enumerate(files, 1)))
    _write(base / "image_class_labels.txt", "1 2\n2 1\n3 1\n4 2\n")
    _write(base / "train_test_split.txt", "1 1\n2 0\n3 1\n4 0\n")
    _write(base / "classes.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    return tmp_path


def test_cub_splits_labels_names(cub):
    train = D.paper_dataset("cub-200-2011", cub, "train")
    assert train.classes == ["Black footed Albatross", "Laysan Albatross"]
    assert train.ids == [
        "cub-200-2011/train/002.Laysan_Albatross/L_1.jpg",
        "cub-200-2011/train/001.Black_footed_Albatross/B_2.jpg",
    ]
    assert train.labels == [1, 0]
    test = D.paper_dataset("cub-200-2011", cub, "test")
    assert test.labels == [0, 1] and not set(test.ids) & set(train.ids)
    assert D.paper_dataset("cub-200-2011", cub / "CUB_200_2011", "train").ids == train.ids  # the folder itself
    (cub / "CUB_200_2011" / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"cub-200-2011: no data at .*classes\.txt; expected"):
        D.paper_dataset("cub-200-2011", cub)


def test_cub_tables_that_disagree_are_one_line(cub):
    """Before: a KeyError traceback, an unhelpful unpacking error, or labels past the last class read silently."""
    base = cub / "CUB_200_2011"
    for fname, text, why in [
        ("train_test_split.txt", "1 1\n2 0\n3 1\n", r"train_test_split\.txt: no entry for image 4 of images\.txt"),
        (
            "image_class_labels.txt",
            "1 2\n2 1\n3 3\n4 2\n",
            r"image_class_labels\.txt: image 3 has class '3', not 1\.\.2",
        ),
        ("image_class_labels.txt", "1 2\n2\n3 1\n4 2\n", r"image_class_labels\.txt: line 2 is not '<id> <value>'"),
        (
            "classes.txt",
            "1 001.Black_footed_Albatross\n3 002.Laysan_Albatross\n",
            r"classes\.txt: class ids are not 1\.\.2",
        ),
    ]:
        before = (base / fname).read_text()
        _write(base / fname, text)
        with pytest.raises(ValueError, match=rf"^{base}/{why}; fix or replace that file"):
            D.paper_dataset("cub-200-2011", cub, "train")
        _write(base / fname, before)
    assert len(D.paper_dataset("cub-200-2011", cub, "train")) == 2


# ---------------------------------------------------------------- Flowers-102 and Stanford Cars (.mat files)
def _fake_flowers(root: Path, labels: list[int], setid: dict[str, list[int]]) -> Path:
    """flowers-102/{jpg/image_<i>.jpg, imagelabels.mat, setid.mat} as the official files: (1, n) arrays, 1-based."""
    from scipy.io import savemat

    base = root / "flowers-102"
    for i in range(1, len(labels) + 1):
        _img(base / "jpg" / f"image_{i:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in setid.items()})
    return base


FLOWER_SPLITS = {"trnid": [1, 2], "valid": [3, 4], "tstid": [5, 6]}


def test_flowers102_official_splits_and_names(tmp_path):
    _fake_flowers(tmp_path, [1, 2, 1, 2, 102, 1], FLOWER_SPLITS)
    train = D.paper_dataset("flowers102", tmp_path, "train")
    assert len(train.classes) == 102 and train.classes[0] == "pink primrose"
    assert train.ids == ["flowers102/train/image_00001.jpg", "flowers102/train/image_00002.jpg"]
    assert train.labels == [0, 1]
    assert D.paper_dataset("flowers102", tmp_path, "test").labels == [101, 0]


def test_flowers102_reads_what_torchvision_reads(tmp_path):
    from torchvision.datasets import Flowers102

    class Unchecked(Flowers102):  # torchvision's reader minus its md5 check, which only the official files pass
        def _check_integrity(self):
            return True

    splits = {"trnid": [6, 2, 4], "valid": [1, 7], "tstid": [3, 5]}  # unsorted, as nothing promises sorted
    _fake_flowers(tmp_path, [3, 1, 2, 3, 1, 2, 2], splits)
    for split in ("train", "val", "test"):
        ours, theirs = D.paper_dataset("flowers102", tmp_path, split), Unchecked(str(tmp_path), split=split)
        assert ours.paths == [str(p) for p in theirs._image_files] and ours.labels == theirs._labels
        assert ours.classes == Flowers102.classes[:3]  # labels 1..3: three classes
    _fake_flowers(tmp_path / "one", [1, 2], {"trnid": [2], "valid": [1], "tstid": [1]})
    assert D.paper_dataset("flowers102", tmp_path / "one").labels == [1]  # torchvision: 'int' has no 'tolist'


def test_flowers102_malformed_mat_is_one_line(tmp_path):
    from scipy.io import savemat

    base = _fake_flowers(tmp_path, [1, 2, 1, 2, 1, 2], FLOWER_SPLITS)
    setid = base / "setid.mat"
    for write, why in [
        (lambda: setid.write_bytes(b"MATLAB 5.0 MAT-file, truncated"), "(not a readable .mat file with 'trnid': "),
        (lambda: savemat(setid, {"trnid": np.array([[1, 9]])}), "(it lists image 9, but imagelabels.mat labels only 6"),
        (lambda: savemat(setid, {"trnid": np.array([[0, 1]])}), "('trnid' is not a list of 1-based numbers)"),
        (lambda: savemat(setid, {"valid": np.array([[1]])}), "(not a readable .mat file with 'trnid': KeyError)"),
    ]:
        write()
        with pytest.raises(FileNotFoundError) as e:
            D.paper_dataset("flowers102", tmp_path, "train")
        _one_line(e, f"flowers102: no data at {setid} {why}")
    savemat(setid, {k: np.array([v]) for k, v in FLOWER_SPLITS.items()})
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 103, 1, 1, 1]])})
    with pytest.raises(FileNotFoundError) as e:
        D.paper_dataset("flowers102", tmp_path, "train")
    _one_line(e, f"flowers102: no data at {base / 'imagelabels.mat'} (label 103: Oxford Flowers-102 has 102 classes)")


def test_stanford_cars(tmp_path):
    from scipy.io import savemat

    base = tmp_path / "stanford_cars"
    names = np.array(["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012"], dtype=object)
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    annotations = {"train": base / "devkit" / "cars_train_annos.mat", "test": base / "cars_test_annos_withlabels.mat"}
    for split, mat in annotations.items():
        ann = np.zeros(2, dtype=[("fname", "O"), ("class", "O")])
        ann["fname"], ann["class"] = ["00001.jpg", "00002.jpg"], [2, 1]
        savemat(mat, {"annotations": ann})
        for f in ann["fname"]:
            _img(base / f"cars_{split}" / f)
    train = D.paper_dataset("stanford-cars", tmp_path, "train")
    assert train.classes == list(names) and train.labels == [1, 0]
    assert train.ids == ["stanford-cars/train/00001.jpg", "stanford-cars/train/00002.jpg"]
    assert D.paper_dataset("stanford-cars", tmp_path, "test").ids[0] == "stanford-cars/test/00001.jpg"


def test_stanford_cars_annotations_the_devkit_never_has_are_one_line(tmp_path):
    from scipy.io import savemat

    test_stanford_cars(tmp_path)
    mat = tmp_path / "stanford_cars" / "devkit" / "cars_train_annos.mat"
    for fname, cls, why in [
        ("../../../outside.jpg", 1, r"entry '.*outside\.jpg' is not a file name in .*cars_train; fix or replace"),
        ("/etc/passwd", 1, r"entry '/etc/passwd' is not a file name in .*cars_train; fix or replace"),
        ("00001.jpg", 3, r"a class is not 1\.\.2 \(the class_names of cars_meta\.mat\); fix or replace"),
    ]:
        ann = np.zeros(2, dtype=[("fname", "O"), ("class", "O")])
        ann["fname"], ann["class"] = [fname, "00002.jpg"], [cls, 1]
        savemat(mat, {"annotations": ann})
        with pytest.raises(ValueError, match=rf"^{mat}: {why}"):
            D.paper_dataset("stanford-cars", tmp_path, "train")
    mat.write_bytes(b"not a .mat file" * 10)
    with pytest.raises(FileNotFoundError) as e:
        D.paper_dataset("stanford-cars", tmp_path, "train")
    _one_line(e, f"stanford-cars: no data at {tmp_path / 'stanford_cars'} (a .mat file does not read as torchvision")


# ---------------------------------------------------------------- Caltech-101 (our seeded split)
def test_caltech101_guidedmixup_split(tmp_path):
    import torch
    from sklearn.model_selection import train_test_split

    folder = tmp_path / "caltech101" / "101_ObjectCategories"
    _img(folder / "BACKGROUND_Google" / "image_0001.jpg")
    for cls in ("accordion", "yin_yang"):
        for i in range(1, 6):
            _img(folder / cls / f"image_{i:04d}.jpg", "L" if cls == "yin_yang" else "RGB", 90)
    train = D.paper_dataset("caltech101", tmp_path, "train")
    test = D.paper_dataset("caltech101", tmp_path, "test")
    assert train.classes == ["accordion", "yin yang"]  # BACKGROUND_Google is not a class
    assert train.class_counts().tolist() == [4, 4] and test.class_counts().tolist() == [1, 1]
    assert not set(train.ids) & set(test.ids) and len(set(train.ids) | set(test.ids)) == 10
    assert train.ids[0].startswith("caltech101/train/accordion/image_000")
    assert all(train.load(i).mode == "RGB" for i in range(len(train)))
    # Same membership as GuidedMixup's FGVC/DataLoad/data_load.py call (torch indices, seed 1).
    y = [0] * 5 + [1] * 5
    _, theirs = train_test_split(torch.arange(10), stratify=y, test_size=0.2, train_size=0.8, random_state=1)
    assert test.ids == [
        f"caltech101/test/{['accordion', 'yin_yang'][i // 5]}/image_{i % 5 + 1:04d}.jpg"
        for i in sorted(theirs.tolist())
    ]
    assert D.paper_dataset("caltech101", tmp_path, "test").ids == test.ids


def test_caltech101_folders_torchvision_would_misread_are_one_line(tmp_path):
    folder = tmp_path / "caltech101" / "101_ObjectCategories"
    for i in range(1, 4):
        _img(folder / "accordion" / f"image_{i:04d}.jpg")
    with pytest.raises(
        ValueError, match=r"^caltech101: no folder .*BACKGROUND_Google; torchvision's .*create it empty"
    ):
        D.paper_dataset("caltech101", tmp_path)  # torchvision's own error: 'list.remove(x): x not in list'
    (folder / "BACKGROUND_Google").mkdir()
    assert D.paper_dataset("caltech101", tmp_path).classes == ["accordion"]
    for stray, why in [
        (
            folder / "accordion" / ".DS_Store",
            r"accordion/\.DS_Store is not one of image_0001\.jpg \.\. image_0004\.jpg",
        ),
        (
            folder / "accordion" / "image_0005.jpg",
            r"accordion/image_0005\.jpg is not one of image_0001\.jpg \.\. image_0004\.jpg",
        ),
        (folder / "notes.txt", r"notes\.txt is not a class folder, yet torchvision's Caltech101 would take it for one"),
    ]:
        _write(stray, "x")
        with pytest.raises(ValueError, match=rf"^caltech101: {folder}/{why}"):
            D.paper_dataset("caltech101", tmp_path)
        stray.unlink()
    _img(folder / "yin_yang" / "image_0001.jpg")
    with pytest.raises(ValueError, match=r"yin_yang holds 1 image\(s\); the 80/20 split needs 2 or more per class$"):
        D.paper_dataset("caltech101", tmp_path)


# ---------------------------------------------------------------- few_shot, choose_fraction
def _toy(counts: list[int]) -> D.ImageSet:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    return D.ImageSet(
        "toy",
        [f"c{c}" for c in range(len(counts))],
        [f"toy/{i:03d}" for i in range(len(labels))],
        labels,
        loader=lambda i: None,
    )


def test_few_shot_exactly_k_per_class_and_seeded():
    ds = _toy([10, 7, 3])
    a, b, other = D.few_shot(ds, 3, seed=0), D.few_shot(ds, 3, seed=0), D.few_shot(ds, 3, seed=1)
    assert a.class_counts().tolist() == [3, 3, 3] and a.name == "toy-3shot"
    assert a.ids == b.ids and a.ids != other.ids
    assert all(ds.labels[ds.ids.index(i)] == y for i, y in zip(a.ids, a.labels))
    with pytest.raises(ValueError, match=r"few-shot k=4: classes \['c2'\] have fewer than 4 images"):
        D.few_shot(ds, 4, seed=0)
    with pytest.raises(ValueError, match="few-shot k=0"):
        D.few_shot(ds, 0, seed=0)


def test_choose_fraction_per_class_counts():
    ds = _toy([10, 7, 3, 1])
    labels = np.asarray(ds.labels)
    for fraction in (0.5, 0.3, 1.0):
        chosen = D.choose_fraction(ds, fraction, seed=0)
        assert len(set(chosen.tolist())) == len(chosen) and np.all(np.diff(chosen) > 0)
        expected = [max(1, round(fraction * n)) for n in (10, 7, 3, 1)]  # at least one per class
        assert np.bincount(labels[chosen], minlength=4).tolist() == expected
    assert np.bincount(labels[D.choose_fraction(ds, 0.5, seed=0)]).tolist() == [5, 4, 2, 1]  # round half to even
    assert np.array_equal(D.choose_fraction(ds, 0.5, seed=3), D.choose_fraction(ds, 0.5, seed=3))
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=rf"fraction={bad}: expected a value in \(0, 1\]"):
            D.choose_fraction(ds, bad, seed=0)


def test_cub_entry_leaving_the_root_is_refused_in_one_line(cub):
    images = cub / "CUB_200_2011" / "images.txt"
    for entry in ("../../outside.jpg", "/etc/passwd", "001.a\\..\\..\\x.jpg"):
        _write(
            images,
            f"1 {entry}\n2 001.Black_footed_Albatross/B_1.jpg\n3 001.Black_footed_Albatross/B_2.jpg\n"
            f"4 002.Laysan_Albatross/L_2.jpg\n",
        )
        with pytest.raises(ValueError, match=r"images\.txt: entry .* is not a path inside the dataset root"):
            D.paper_dataset("cub-200-2011", cub, "train")
