"""Reading Cityscapes from its official layout, on tiny generated frames (16 x 32 pixels)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prune_env.data import cityscapes
from prune_env.data.cityscapes import read_cityscapes, train_classes, train_id_table

H, W = 16, 32
# split -> city -> number of frames
LAYOUT = {"train": {"aachen": 2, "bochum": 3}, "val": {"frankfurt": 2}}
# Ids in the label maps: road, car, unlabeled, ego vehicle, parking (ignored in training),
# bicycle (the last train id), and 200, which no Cityscapes class has.
IDS = np.array([7, 26, 0, 1, 9, 33, 200], dtype=np.uint8)
EXPECTED = {7: 0, 26: 13, 0: 255, 1: 255, 9: 255, 33: 18, 200: 255}


def _frame_stem(city: str, index: int) -> str:
    return f"{city}_{index:06d}_000019"


def _image_file(root: Path, split: str, city: str, index: int) -> Path:
    return root / "leftImg8bit" / split / city / f"{_frame_stem(city, index)}_leftImg8bit.png"


def _label_file(root: Path, split: str, city: str, index: int) -> Path:
    return root / "gtFine" / split / city / f"{_frame_stem(city, index)}_gtFine_labelIds.png"


def _write_frame(root: Path, split: str, city: str, index: int, rgb: np.ndarray,
                 ids: np.ndarray | None) -> None:
    """One frame in Cityscapes' layout; ``ids=None`` writes the image only."""
    stem = _frame_stem(city, index)
    image_dir = root / "leftImg8bit" / split / city
    label_dir = root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(image_dir / f"{stem}_leftImg8bit.png")
    if ids is not None:
        Image.fromarray(ids).save(label_dir / f"{stem}_gtFine_labelIds.png")
        # the other gtFine files of the real zip, which must not be mistaken for labels
        Image.fromarray(rgb).save(label_dir / f"{stem}_gtFine_color.png")
        (label_dir / f"{stem}_gtFine_polygons.json").write_text("{}")


def _random_frame(rng: np.random.Generator, height: int = H, width: int = W
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A random RGB image and a label map of 2x2 blocks of ``IDS`` (so that halving the
    size by nearest neighbour has one right answer whichever pixel of a block it takes)."""
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    blocks = rng.choice(IDS, (height // 2, width // 2))
    return rgb, np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)


@pytest.fixture
def dataset(tmp_path):
    """A tiny Cityscapes folder; returns (root, {split: [(rgb, ids), ...] in sorted order})."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cityscapes"
    frames: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for split, cities in LAYOUT.items():
        frames[split] = []
        for city, count in cities.items():
            for index in range(count):
                rgb, ids = _random_frame(rng)
                _write_frame(root, split, city, index, rgb, ids)
                frames[split].append((rgb, ids))
    return root, frames


def _train_ids(ids: np.ndarray) -> np.ndarray:
    return np.vectorize(EXPECTED.__getitem__)(ids)


def test_train_id_table_and_classes():
    table = train_id_table()
    assert table.shape == (256,) and table.dtype == np.uint8
    for label_id, train_id in EXPECTED.items():
        assert table[label_id] == train_id
    assert (table[34:] == 255).all()  # no Cityscapes class beyond id 33
    # 19 ids map to 19 distinct train ids; license plate (id -1) has no entry
    assert sorted(table[table != 255].tolist()) == list(range(19))
    classes = train_classes()
    assert len(classes) == 19 and classes[0] == "road" and classes[13] == "car"
    assert classes[18] == "bicycle" and "license plate" not in classes


def test_full_size_read_is_exact(dataset):
    root, frames = dataset
    data = read_cityscapes(root, H, progress=False)
    assert data.train_images.shape == (5, 3, H, W) and data.train_images.dtype == torch.uint8
    assert data.train_labels.shape == (5, H, W) and data.train_labels.dtype == torch.int64
    assert data.val_images.shape == (2, 3, H, W) and data.val_labels.shape == (2, H, W)
    assert data.classes == train_classes()
    for split in ("train", "val"):  # val comes from val/, frames in sorted file order
        images = getattr(data, f"{split}_images").numpy()
        labels = getattr(data, f"{split}_labels").numpy()
        for i, (rgb, ids) in enumerate(frames[split]):
            np.testing.assert_array_equal(images[i], rgb.transpose(2, 0, 1))
            np.testing.assert_array_equal(labels[i], _train_ids(ids))


def test_resize_keeps_ids(dataset):
    root, frames = dataset
    data = read_cityscapes(root, 8, progress=False)
    assert data.train_images.shape == (5, 3, 8, 16) and data.train_labels.shape == (5, 8, 16)
    assert data.val_images.shape == (2, 3, 8, 16) and data.val_labels.shape == (2, 8, 16)
    for i, (_, ids) in enumerate(frames["train"]):
        # nearest neighbour on 2x2 blocks: exactly one value per block, no new values
        np.testing.assert_array_equal(data.train_labels[i].numpy(), _train_ids(ids[::2, ::2]))
    assert set(data.train_labels.unique().tolist()) <= {0, 13, 18, 255}


def test_image_resize_is_bilinear_not_nearest(tmp_path):
    # A constant image stays constant, and fine stripes average out (antialiasing) instead
    # of one stripe being picked.
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[:, :, 0] = 90
    rgb[::2, :, 1] = 200  # one-pixel horizontal stripes in green
    ids = np.full((H, W), 7, dtype=np.uint8)
    for split in ("train", "val"):
        _write_frame(tmp_path, split, "aachen", 0, rgb, ids)
    image = read_cityscapes(tmp_path, 8, progress=False).train_images[0]
    assert (image[0] == 90).all() and (image[2] == 0).all()
    assert ((image[1] > 50) & (image[1] < 150)).all()  # ~100: the mean of 200 and 0


def test_height_too_small(dataset):
    with pytest.raises(ValueError, match="at least 8"):
        read_cityscapes(dataset[0], 4, progress=False)


@pytest.mark.parametrize("folder", ["gtFine/train", "leftImg8bit/train", "gtFine/val", "."])
def test_missing_folder_says_how_to_get_the_data(dataset, folder):
    root = dataset[0]
    target = root / folder
    for path in sorted(target.rglob("*"), reverse=True):  # files before their folders
        path.unlink() if path.is_file() else path.rmdir()
    target.rmdir()
    with pytest.raises(FileNotFoundError) as err:
        read_cityscapes(root, 8, progress=False)
    message = str(err.value)
    for part in ("registration", "https://www.cityscapes-dataset.com",
                 "leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip",
                 "ROOT/leftImg8bit/train/aachen", "--data-dir"):
        assert part in message


def test_empty_split_says_how_to_get_the_data(dataset):
    root = dataset[0]
    for path in (root / "leftImg8bit" / "val").rglob("*.png"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match="cityscapes-dataset.com") as err:
        read_cityscapes(root, 8, progress=False)
    assert "leftImg8bit/val" in str(err.value)


def test_missing_label_file_is_named(dataset):
    root = dataset[0]
    label = _label_file(root, "train", "bochum", 1)
    label.unlink()
    with pytest.raises(FileNotFoundError, match="missing label file") as err:
        read_cityscapes(root, 8, progress=False)
    assert str(label) in str(err.value)


def test_missing_image_file_is_named(dataset):
    root = dataset[0]
    image = _image_file(root, "val", "frankfurt", 0)
    image.unlink()
    with pytest.raises(FileNotFoundError, match="missing image file") as err:
        read_cityscapes(root, 8, progress=False)
    assert str(image) in str(err.value)


def test_wrong_aspect_is_refused(dataset):
    root = dataset[0]
    rgb, ids = _random_frame(np.random.default_rng(1), height=16, width=16)
    _write_frame(root, "train", "bochum", 7, rgb, ids)
    bad = _image_file(root, "train", "bochum", 7)
    with pytest.raises(ValueError, match="2:1") as err:
        read_cityscapes(root, 8, progress=False)
    assert str(bad) in str(err.value)


def test_cache_is_written_once_and_read_back(dataset, tmp_path, monkeypatch):
    root = dataset[0]
    cache_dir = tmp_path / "cache"
    first = read_cityscapes(root, 8, cache_dir=cache_dir, progress=False)
    (cache,) = cache_dir.iterdir()  # one file, no temporary left behind
    assert cache.name.startswith("cityscapes-8-") and cache.suffix == ".npz"
    # a plain .npz: a zip of .npy arrays that loads without pickle
    assert all(n.endswith(".npy") for n in zipfile.ZipFile(cache).namelist())
    with np.load(cache, allow_pickle=False) as npz:
        assert npz["train_images"].shape == (5, 3, 8, 16)
    stamp = cache.stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache was there")

    monkeypatch.setattr(cityscapes, "_decode_all", no_decoding)
    second = read_cityscapes(root, 8, cache_dir=cache_dir, progress=False)
    assert cache.stat().st_mtime_ns == stamp and list(cache_dir.iterdir()) == [cache]
    for key in ("train_images", "train_labels", "val_images", "val_labels"):
        a, b = getattr(first, key), getattr(second, key)
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert second.classes == first.classes


def test_changed_files_or_height_give_another_cache_file(dataset, tmp_path):
    root = dataset[0]
    cache_dir = tmp_path / "cache"
    read_cityscapes(root, 8, cache_dir=cache_dir, progress=False)
    read_cityscapes(root, 16, cache_dir=cache_dir, progress=False)
    rgb, ids = _random_frame(np.random.default_rng(2))
    _write_frame(root, "val", "lindau", 0, rgb, ids)
    data = read_cityscapes(root, 8, cache_dir=cache_dir, progress=False)
    assert len(data.val_labels) == 3  # the new frame is read, not the stale cache
    assert len(list(cache_dir.glob("cityscapes-8-*.npz"))) == 2
    assert len(list(cache_dir.glob("cityscapes-16-*.npz"))) == 1


def test_damaged_cache_is_rebuilt(dataset, tmp_path):
    root = dataset[0]
    cache_dir = tmp_path / "cache"
    first = read_cityscapes(root, 8, cache_dir=cache_dir, progress=False)
    (cache,) = cache_dir.iterdir()
    cache.write_bytes(b"not a zip file")
    again = read_cityscapes(root, 8, cache_dir=cache_dir, progress=False)
    assert torch.equal(first.val_labels, again.val_labels)
    with np.load(cache, allow_pickle=False) as npz:  # rewritten whole
        assert npz["val_labels"].shape == (2, 8, 16)


def test_load_data_reads_cityscapes_as_a_segmentation_set(dataset, tmp_path, monkeypatch):
    """Through `load_data`: train ids as masks, val/ as the test split, a validation part
    carved from train/, ImageNet normalisation, and the cache under the data root."""
    from prune_env.data.datasets import IMAGENET_MEAN, load_data

    root, frames = dataset
    monkeypatch.setenv("PRUNE_ENV_DATA", str(tmp_path / "cache-root"))
    bundle = load_data("cityscapes", data_dir=root, image_size=8, val_fraction=0.2)
    assert bundle.task == "segmentation" and bundle.num_classes == 19
    assert bundle.image_size == (8, 16) and bundle.mean == IMAGENET_MEAN
    assert len(bundle.train) + len(bundle.val) == len(frames["train"]) and len(bundle.val) == 1
    assert len(bundle.test) == len(frames["val"]) and bundle.test.labels.shape == (2, 8, 16)
    assert set(bundle.test.labels.unique().tolist()) <= {0, 13, 18, 255}
    assert list((tmp_path / "cache-root" / "cityscapes-cache").glob("cityscapes-8-*.npz"))
