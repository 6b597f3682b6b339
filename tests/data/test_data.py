"""Tests of prune_env.data.datasets: loading, splitting, normalisation, batches and augmentation."""

from __future__ import annotations

import gzip
import itertools
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prune_env.data import datasets as D

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default cache into tmp so no test writes to the home directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNE_ENV_DATA", str(cache))
    return cache


def denormalise(images: torch.Tensor, bundle: D.DataBundle) -> torch.Tensor:
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    return images * std + mean


# ----------------------------------------------------------------------------- file writers


def cifar_rows(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """CIFAR rows encoding each image's index (R plane), 8*x (G plane) and 20*label (B plane)."""
    n = len(indices)
    img = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    img[:, 0] = indices[:, None, None]
    img[:, 1] = (8 * np.arange(32))[None, None, :]
    img[:, 2] = (20 * (labels % 10))[:, None, None]
    return img.reshape(n, 3072)


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a small CIFAR-10 in the python pickle format (bytes keys, like Python 2 files)."""
    base = root / D.CIFAR10_DIR
    base.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train_labels = rng.integers(0, 10, 5 * per_batch)
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        idx = np.arange(5 * per_batch)[sl]
        entry = {b"data": cifar_rows(idx, train_labels[sl]), b"labels": train_labels[sl].tolist()}
        (base / f"data_batch_{b + 1}").write_bytes(pickle.dumps(entry))
    test_labels = rng.integers(0, 10, per_batch)
    entry = {
        b"data": cifar_rows(np.arange(per_batch), test_labels),
        b"labels": test_labels.tolist(),
    }
    (base / "test_batch").write_bytes(pickle.dumps(entry))
    names = [f"class{i}".encode() for i in range(10)]
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return {"train_labels": train_labels, "test_labels": test_labels}


def write_cifar100(root: Path, n_train: int = 50, n_test: int = 20) -> dict[str, np.ndarray]:
    """Write a small CIFAR-100 in the python pickle format (str keys)."""
    base = root / D.CIFAR100_DIR
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        entry = {
            "data": cifar_rows(np.arange(n), fine),
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
        }
        (base / name).write_bytes(pickle.dumps(entry))
        out[name] = fine
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    (base / "meta").write_bytes(pickle.dumps(meta))
    return out


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the gzipped idx format of (Fashion-)MNIST."""
    magic = 0x800 + array.ndim  # type 0x08: unsigned byte
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_debian(directory: Path, n_train: int = 30, n_test: int = 10) -> dict:
    """Write tiny Fashion-MNIST .gz files laid out like Debian's package."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.repeat(labels * 25, 28 * 28).reshape(n, 28, 28).astype(np.uint8)
        write_idx_gz(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_gz(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = labels
    return arrays


# ----------------------------------------------------------------------------- arguments


def test_unknown_name_lists_all_data_sets() -> None:
    with pytest.raises(ValueError) as err:
        D.load_data("mnist")
    for name in D.DATASETS:
        assert name in str(err.value)
    assert D.DEFAULT_DATASET == "fashion-mnist"


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_invalid_val_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        D.load_data("synthetic", val_fraction=fraction, synthetic_size=100)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_sizes_and_metadata() -> None:
    b = D.load_data("synthetic")
    assert (len(b.train), len(b.val), len(b.test)) == (2700, 300, 600)
    assert b.train.images.shape == (2700, 1, 32, 32)
    assert b.test.images.shape == (600, 1, 32, 32)
    assert b.train.images.dtype == torch.float32 and b.train.labels.dtype == torch.int64
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 1, (32, 32))
    assert b.classes == D.SYNTHETIC_CLASSES and len(b.mean) == len(b.std) == 1
    for split in (b.train, b.val, b.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.min() > len(split) / 20  # every class present, roughly balanced


def test_synthetic_image_size_and_size() -> None:
    b = D.load_data("synthetic", synthetic_size=200, image_size=24, val_fraction=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (150, 50, 40)
    assert b.train.images.shape[1:] == (1, 24, 24) and b.image_size == (24, 24)


def test_synthetic_generation_is_fast() -> None:
    best = min(_timed(lambda: D.make_synthetic(3600, 32, seed=0)) for _ in range(2))
    assert best < 1.0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_synthetic_pixels_in_range_and_balanced() -> None:
    images, labels = D.make_synthetic(1000, 32, seed=3)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert torch.bincount(labels).tolist() == [100] * 10


def test_synthetic_deterministic_per_seed() -> None:
    a = D.load_data("synthetic", synthetic_size=500, seed=7)
    b = D.load_data("synthetic", synthetic_size=500, seed=7)
    c = D.load_data("synthetic", synthetic_size=500, seed=8)
    for name in ("train", "val", "test"):
        sa, sb, sc = getattr(a, name), getattr(b, name), getattr(c, name)
        assert torch.equal(sa.images, sb.images) and torch.equal(sa.labels, sb.labels)
        assert not torch.equal(sa.images, sc.images)
    assert a.mean == b.mean and a.std == b.std


def test_synthetic_train_val_disjoint_and_complete() -> None:
    b = D.load_data("synthetic", synthetic_size=1000, val_fraction=0.2)
    full = D.load_data("synthetic", synthetic_size=1000, val_fraction=0.0)
    assert (len(b.train), len(b.val), len(full.train), len(full.val)) == (800, 200, 1000, 0)
    train, val = b.train.images.flatten(1), b.val.images.flatten(1)
    # Noisy images never coincide, so a zero distance would mean an image is in both splits.
    assert torch.cdist(train, val).min() > 1.0
    # Train + val is the whole training set: compare per-image sums in pixel units.
    parts = torch.cat([denormalise(b.train.images, b), denormalise(b.val.images, b)])
    whole = denormalise(full.train.images, full)
    key_parts = torch.sort(parts.flatten(1).sum(1)).values
    key_whole = torch.sort(whole.flatten(1).sum(1)).values
    assert torch.allclose(key_parts, key_whole, atol=1e-2)


def test_synthetic_normalised_per_channel() -> None:
    b = D.load_data("synthetic")
    x = b.train.images
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.std().item() - 1.0) < 1e-4
    # val and test use the training statistics, so they are only close to 0 / 1
    assert abs(b.val.images.mean().item()) < 0.1 and abs(b.test.images.std().item() - 1) < 0.1


@pytest.fixture
def one_thread():
    """A tiny model gains nothing from threads, and they stall when other jobs share the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_synthetic_is_learnable_by_a_tiny_model() -> None:
    torch.manual_seed(0)
    b = D.load_data("synthetic", seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for x, y in itertools.islice(D.infinite_batches(b.train, 64, generator=gen), 200):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(b.val.images).argmax(1) == b.val.labels).float().mean().item()
    assert acc > 0.6  # chance is 0.1


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_generated_files_load(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    b = D.load_data("cifar10", data_dir=tmp_path, val_fraction=0.1, seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (90, 10, 20)
    assert b.train.images.shape == (90, 3, 32, 32)
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 3, (32, 32))
    assert b.classes == [f"class{i}" for i in range(10)]
    assert b.mean == D.CIFAR10_MEAN and b.std == D.CIFAR10_STD

    pixels = torch.round(denormalise(b.train.images, b) * 255)
    # Channel order and layout: G plane holds 8 * column.
    assert torch.equal(pixels[:, 1], (8 * torch.arange(32.0)).expand(90, 32, 32))
    # Images keep their labels through the permutation (B plane holds 20 * label).
    assert torch.equal(pixels[:, 2, 0, 0].long(), 20 * b.train.labels)
    train_idx = pixels[:, 0, 0, 0].long()
    assert torch.equal(b.train.labels, torch.from_numpy(written["train_labels"])[train_idx])

    # Test set: untouched, in file order.
    test_pixels = torch.round(denormalise(b.test.images, b) * 255)
    assert test_pixels[:, 0, 0, 0].long().tolist() == list(range(20))
    assert b.test.labels.tolist() == written["test_labels"].tolist()


def test_cifar10_split_disjoint_complete_and_seeded(tmp_path: Path) -> None:
    write_cifar10(tmp_path)

    def indices(bundle: D.DataBundle, split: D.Split) -> list[int]:
        return torch.round(denormalise(split.images, bundle)[:, 0, 0, 0] * 255).long().tolist()

    a = D.load_data("cifar10", data_dir=tmp_path, val_fraction=0.2, seed=0)
    a2 = D.load_data("cifar10", data_dir=tmp_path, val_fraction=0.2, seed=0)
    c = D.load_data("cifar10", data_dir=tmp_path, val_fraction=0.2, seed=1)
    train, val = indices(a, a.train), indices(a, a.val)
    assert len(val) == 20 and not set(train) & set(val)
    assert sorted(train + val) == list(range(100))
    assert indices(a2, a2.val) == val  # same seed, same split
    assert set(indices(c, c.val)) != set(val)  # another seed, another split
    assert torch.equal(a.test.images, c.test.images)  # the test set ignores the seed


def test_cifar100_generated_files_load(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    b = D.load_data("cifar100", data_dir=tmp_path, val_fraction=0.2)
    assert (len(b.train), len(b.val), len(b.test)) == (40, 10, 20)
    assert b.test.images.shape == (20, 3, 32, 32)
    assert (b.num_classes, b.in_channels) == (100, 3)
    assert b.classes[:2] == ["fine0", "fine1"] and len(b.classes) == 100
    assert b.test.labels.tolist() == written["test"].tolist()  # fine labels, not coarse
    idx = torch.round(denormalise(b.train.images, b)[:, 0, 0, 0] * 255).long()
    assert torch.equal(b.train.labels, torch.from_numpy(written["train"])[idx])


def test_cifar_resized(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    b = D.load_data("cifar10", data_dir=tmp_path, image_size=16)
    assert b.train.images.shape[1:] == (3, 16, 16) and b.image_size == (16, 16)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_says_how_to_fix(name: str, tmp_path: Path) -> None:
    for data_dir in (tmp_path, None):  # None: the (empty) cache directory
        with pytest.raises(FileNotFoundError) as err:
            D.load_data(name, data_dir=data_dir)
        assert "--data-dir" in str(err.value) and "--download" in str(err.value)


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_missing_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-such-dir")
    for data_dir in (tmp_path / "empty", None):
        with pytest.raises(FileNotFoundError) as err:
            D.load_data("fashion-mnist", data_dir=data_dir)
        message = str(err.value)
        assert "apt-get install dataset-fashion-mnist" in message
        assert "--data-dir DIR containing FashionMNIST/raw" in message
        assert "--download" in message


def test_fashion_mnist_from_fake_debian_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_cache: Path
) -> None:
    fake = tmp_path / "debian"
    labels = write_fake_debian(fake)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST_DIR", fake)

    b = D.load_data("fashion-mnist", val_fraction=0.2)  # no data_dir: the cache directory
    for name in D.FASHION_MNIST_FILES:
        assert (_isolated_cache / "FashionMNIST" / "raw" / name).is_file()
    assert (len(b.train), len(b.val), len(b.test)) == (24, 6, 10)
    assert b.train.images.shape == (24, 1, 28, 28) and b.image_size == (28, 28)
    assert b.test.labels.tolist() == labels["t10k"].tolist()
    pixels = torch.round(denormalise(b.train.images, b) * 255)
    assert torch.equal(pixels[:, 0, 5, 5].long(), 25 * b.train.labels)

    # Once extracted, the files are used even when the package is gone.
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "gone")
    again = D.load_data("fashion-mnist", val_fraction=0.2)
    assert torch.equal(again.train.images, b.train.images)


@pytest.mark.parametrize("damage", ["truncate", "header", "gzip"])
def test_damaged_fashion_mnist_files_are_a_message_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    fake = tmp_path / "debian"
    write_fake_debian(fake)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST_DIR", fake)
    root = tmp_path / "root"
    raw = root / "FashionMNIST" / "raw"
    if damage == "gzip":
        (fake / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
        with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz is damaged"):
            D.load_data("fashion-mnist", data_dir=root)
        assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no half file
        return
    D.load_data("fashion-mnist", data_dir=root)
    images = raw / "train-images-idx3-ubyte"
    content = images.read_bytes()
    images.write_bytes(content[: len(content) // 2] if damage == "truncate"
                       else b"\x00\x00\x99\x03" + content[4:])
    with pytest.raises(ValueError, match=f"{raw}.*(damaged|do not match)"):
        D.load_data("fashion-mnist", data_dir=root)


@pytest.fixture(scope="module")
def real_fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[D.DataBundle, Path]:
    if not DEBIAN_DIR.is_dir():
        pytest.skip(f"{DEBIAN_DIR} absent: apt-get install dataset-fashion-mnist to run this")
    root = tmp_path_factory.mktemp("fashion-root")
    return D.load_data("fashion-mnist", data_dir=root), root


def test_fashion_mnist_real_load(real_fashion: tuple[D.DataBundle, Path]) -> None:
    b, root = real_fashion
    assert (len(b.train), len(b.val), len(b.test)) == (54000, 6000, 10000)
    assert b.train.images.shape == (54000, 1, 28, 28)
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 1, (28, 28))
    assert b.classes[0] == "T-shirt/top" and b.classes[-1] == "Ankle boot"
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10
    # The Debian files were decompressed into the given root.
    raw = root / "FashionMNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + 60000 * 28 * 28
    assert (raw / "t10k-labels-idx1-ubyte").stat().st_size == 8 + 10000


def test_fashion_mnist_real_normalised(real_fashion: tuple[D.DataBundle, Path]) -> None:
    b, _ = real_fashion
    # Fixed well-known constants of the full training set: close to 0 / 1 on the split.
    assert abs(b.train.images.mean().item()) < 0.01
    assert abs(b.train.images.std().item() - 1.0) < 0.01


# ----------------------------------------------------------------------------- image folder


def write_image_folder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"cat": (200, 40, 40), "dog": (40, 40, 200)}
    for part, count in (("train", 6), ("test", 2)):
        for cls, colour in colours.items():
            (root / part / cls).mkdir(parents=True)
            for i in range(count):
                h, w = (30, 40) if i % 2 else (50, 20)  # mixed sizes get resized
                noise = rng.integers(-40, 40, (h, w, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / part / cls / f"{i}.png")


def test_imagefolder_loads_resized(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    b = D.load_data("imagefolder", data_dir=tmp_path, image_size=16, val_fraction=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 4)
    assert b.train.images.shape == (9, 3, 16, 16) and b.image_size == (16, 16)
    assert (b.num_classes, b.in_channels, b.classes) == (2, 3, ["cat", "dog"])
    assert b.test.labels.tolist() == [0, 0, 1, 1]
    red_minus_blue = denormalise(b.test.images, b)[:, 0] - denormalise(b.test.images, b)[:, 2]
    assert ((red_minus_blue.mean(dim=(1, 2)) > 0).long() == 1 - b.test.labels).all()
    # Statistics come from the training split.
    x = b.train.images.transpose(0, 1).flatten(1)
    assert torch.allclose(x.mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(1), torch.ones(3), atol=1e-4)


def test_imagefolder_default_size_is_32(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    assert D.load_data("imagefolder", data_dir=tmp_path).image_size == (32, 32)


def test_imagefolder_missing_dirs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        D.load_data("imagefolder")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="test/"):
        D.load_data("imagefolder", data_dir=tmp_path)


# ----------------------------------------------------------------------------- batches


def small_split(n: int = 100, size: int = 32) -> D.Split:
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, size, size)
    return D.Split(images.contiguous(), torch.arange(n))


def test_iterate_batches_covers_split_once() -> None:
    split = small_split()
    batches = list(D.iterate_batches(split, 32, shuffle=True, generator=torch.Generator()))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(100)) and labels.tolist() != list(range(100))
    for x, y in batches:  # images stay with their labels
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_iterate_batches_order() -> None:
    split = small_split()
    plain = torch.cat([y for _, y in D.iterate_batches(split, 30, shuffle=False)])
    assert plain.tolist() == list(range(100))

    def order(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in D.iterate_batches(split, 30, shuffle=True, generator=gen)])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    with pytest.raises(ValueError):
        next(D.iterate_batches(split, 0, shuffle=False))


def test_infinite_batches_cycles_epochs() -> None:
    split = small_split(50)
    gen = torch.Generator().manual_seed(0)
    batches = list(itertools.islice(D.infinite_batches(split, 10, generator=gen), 12))
    assert len(batches) == 12
    first = torch.cat([y for _, y in batches[:5]])
    second = torch.cat([y for _, y in batches[5:10]])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(50))
    assert not torch.equal(first, second)  # reshuffled each epoch
    with pytest.raises(ValueError, match="empty"):
        next(D.infinite_batches(D.Split(torch.zeros(0, 1, 4, 4), torch.zeros(0)), 4))


# ----------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize(("size", "pad"), [(32, 4), (28, 2)])
def test_augment_is_a_flip_and_padded_crop(size: int, pad: int) -> None:
    assert D.crop_padding(size) == pad
    torch.manual_seed(0)
    images = torch.randn(16, 2, size, size)
    before = images.clone()
    out = D.augment_batch(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(images, before)  # input untouched
    assert not torch.equal(out, images)

    flips = set()
    for img, aug in zip(images, out, strict=True):
        matches = []
        for flip in (False, True):
            src = img.flip(-1) if flip else img
            padded = nn.functional.pad(src, (pad, pad, pad, pad))
            for dy in range(2 * pad + 1):
                for dx in range(2 * pad + 1):
                    if torch.equal(padded[:, dy : dy + size, dx : dx + size], aug):
                        matches.append(flip)
        assert matches, "augmented image is not a flipped/cropped copy"
        flips.add(matches[0])
    assert flips == {False, True}  # both flipped and unflipped images occur


def test_augment_in_batches_keeps_labels_and_is_seeded() -> None:
    split = small_split(40)

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        return list(D.iterate_batches(split, 16, shuffle=False, generator=gen, augment=True))

    a, b = run(0), run(0)
    assert [y.tolist() for _, y in a] == [y.tolist() for y in split.labels.split(16)]
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b, strict=True))
    plain = torch.cat([x for x, _ in D.iterate_batches(split, 16, shuffle=False)])
    augmented = torch.cat([x for x, _ in a])
    assert augmented.shape == plain.shape and not torch.equal(augmented, plain)
    assert (augmented[1:] == 0).any()  # zero padding shows up at the borders
