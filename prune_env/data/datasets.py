"""Data sets held in memory as tensors, with batch iteration and augmentation on whole batches.

Every data set is decoded once at load time into float32 tensors (N x C x H x W), normalised
per channel, so that training and fine-tuning steps only index tensors: no DataLoader, PIL or
per-sample transform sits in the hot path, which matters on a machine with two CPU cores.

Data sets (``load_data(name)``):

- ``fashion-mnist`` (default): 60 000 + 10 000 grey 28x28 images, 10 classes. Read from
  ``DATA_DIR/FashionMNIST/raw``, else decompressed from Debian's ``dataset-fashion-mnist``
  package (``/usr/share/datasets/fashion-mnist``), else downloaded when asked to.
- ``cifar10`` / ``cifar100``: 50 000 + 10 000 colour 32x32 images, 10 / 100 (fine) classes,
  read from the python pickle version (``cifar-10-batches-py``, ``cifar-100-python``).
- ``imagefolder``: ``DATA_DIR/train/<class>/*`` and ``DATA_DIR/test/<class>/*`` image files,
  resized to ``image_size`` (default 32).
- ``synthetic``: generated grey images of ten shapes and textures at random positions, sizes,
  intensities and noise levels; needs no files and is learnable by a small network in seconds.

Segmentation data sets (labels are N x H x W masks, 255 where no loss or metric counts):

- ``fashion-scenes`` (the offline default): grey 64x64 scenes of 2 to 4 real Fashion-MNIST
  items each, every pixel labelled with its item's class + 1 where the item is, 0 (background)
  elsewhere (`prune_env.data.scenes`); ``synthetic_size`` training scenes from Fashion-MNIST's
  training images, a fifth of that as test scenes from its test images; cached once made.
- ``cityscapes``: ``DATA_DIR/leftImg8bit`` and ``DATA_DIR/gtFine`` as Cityscapes ships them,
  the 19 train ids (`prune_env.data.cityscapes`), loaded at ``image_size`` rows (default 128).

The validation split is a seeded random part of the training set; the test set is untouched.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickle
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prune_env.catalog import DATASETS
from prune_env.data.task import IGNORE_INDEX

DEFAULT_DATASET = "fashion-mnist"

# Where Debian's dataset-fashion-mnist package puts the gzipped idx files. A module constant so
# that tests can point it elsewhere.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Well-known per-channel statistics of the full training sets. Fixed constants (rather than
# statistics of the seed-dependent training split) keep the input scaling identical across
# seeds and validation fractions, so a saved model stays valid for any split.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

# Cityscapes is normalised as ImageNet photographs are (its networks usually start from such
# encoders); its frames are loaded at this many rows (1:2 aspect) unless --image-size says.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CITYSCAPES_HEIGHT = 128
# Fashion-MNIST scenes: canvas side, and the generator's seed (the scenes are one fixed set).
SCENE_SIZE, SCENE_SEED = 64, 0

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"

SYNTHETIC_CLASSES = [
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal-stripes",
    "vertical-stripes",
    "diagonal-stripes",
    "checkerboard",
    "two-dots",
]


@dataclass
class Split:
    """One part of a data set: normalised float32 images (N x C x H x W) and int64 labels:
    one per image (N), or one per pixel (N x H x W) for segmentation."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"{self.images.shape[0]} images but {self.labels.shape[0]} labels in a split"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """This split on ``device`` (itself when already there)."""
        return Split(self.images.to(device), self.labels.to(device))

    def pinned(self) -> Split:
        """This split in page-locked host memory: batches copy to a GPU without blocking."""
        return Split(self.images.pin_memory(), self.labels.pin_memory())

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes


@dataclass
class DataBundle:
    """A loaded data set: its three splits and what a model needs to know about it."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    task: str = "classification"  # or "segmentation": labels are then N x H x W masks


def placed(bundle: DataBundle, device: torch.device | str, *, share: float = 0.25
           ) -> DataBundle:
    """The data where training runs: on a GPU whole when its splits take at most ``share``
    of the GPU's free memory (no copy per batch at all), else in pinned host memory; on the
    CPU as it is."""
    device = torch.device(device)
    if device.type != "cuda":
        return bundle
    free, _ = torch.cuda.mem_get_info(device)
    fits = sum(s.nbytes for s in (bundle.train, bundle.val, bundle.test)) <= share * free
    move = (lambda s: s.to(device)) if fits else Split.pinned
    return dataclasses.replace(bundle, train=move(bundle.train), val=move(bundle.val),
                               test=move(bundle.test))


@dataclass
class _RawData:
    """Decoded but not yet split or normalised data: images are float32 in [0, 1]."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    mean: tuple[float, ...] | None = None  # None: compute from the training split
    std: tuple[float, ...] | None = None
    task: str = "classification"


def default_data_root() -> Path:
    """Return where data sets are cached when no data directory is given.

    ``$PRUNE_ENV_DATA`` if set, else ``~/.cache/prune-env/data``.
    """
    env = os.environ.get("PRUNE_ENV_DATA")
    return Path(env) if env else Path.home() / ".cache" / "prune-env" / "data"


def load_data(
    name: str = DEFAULT_DATASET,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    synthetic_size: int = 3000,
    image_size: int | None = None,
) -> DataBundle:
    """Load a data set into memory, split off a validation set and normalise it.

    Args:
        name: One of ``DATASETS``.
        data_dir: Directory holding the data set files (see the module docstring); ``None``
            uses ``default_data_root()``. Required for ``imagefolder``.
        download: Let torchvision download Fashion-MNIST or CIFAR when no files are found.
        val_fraction: Part of the training set held out for validation, in [0, 1).
        seed: Seeds the train/validation permutation and the synthetic images.
        synthetic_size: Number of synthetic training images (the test set has a fifth of that).
        image_size: Side length to resize images to; ``None`` keeps the native size
            (32 for ``imagefolder`` and ``synthetic``).

    Returns:
        The DataBundle, with all images normalised by its ``mean`` and ``std``.

    Raises:
        ValueError: Unknown name or invalid fractions and sizes.
        FileNotFoundError: The data set's files are missing; the message says how to get them.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if image_size is not None and image_size < 4:
        raise ValueError(f"image_size must be at least 4, got {image_size}")
    root = Path(data_dir).expanduser() if data_dir is not None else None
    options = _LoadOptions(root, download, seed, synthetic_size, image_size)
    raw = _LOADERS[name](options)
    if image_size is not None and raw.task == "classification":  # masks come at their size
        raw.train_images = _resize(raw.train_images, image_size)
        raw.test_images = _resize(raw.test_images, image_size)

    train, val = _split_train_val(raw.train_images, raw.train_labels, val_fraction, seed)
    if raw.mean is not None and raw.std is not None:
        mean, std = raw.mean, raw.std
    else:
        mean, std = _channel_stats(train.images)
    return DataBundle(
        name=name,
        train=_normalise(train, mean, std),
        val=_normalise(val, mean, std),
        test=_normalise(Split(raw.test_images, raw.test_labels), mean, std),
        num_classes=len(raw.classes),
        in_channels=int(raw.train_images.shape[1]),
        image_size=(int(raw.train_images.shape[2]), int(raw.train_images.shape[3])),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        classes=list(raw.classes),
        task=raw.task,
    )


class _LoadOptions(NamedTuple):
    data_dir: Path | None
    download: bool
    seed: int
    synthetic_size: int
    image_size: int | None


# ----------------------------------------------------------------------------- splitting


def _split_train_val(
    images: Tensor, labels: Tensor, val_fraction: float, seed: int
) -> tuple[Split, Split]:
    """Split the training set by a seeded permutation: the first part is validation."""
    n = int(labels.shape[0])
    n_val = int(round(val_fraction * n))
    if n - n_val < 1:
        raise ValueError(f"val_fraction={val_fraction} leaves no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return Split(images[train_idx], labels[train_idx]), Split(images[val_idx], labels[val_idx])


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (float64 sums: 10^8 pixels lose float32 bits)."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double()
    mean = x.mean(dim=1)
    std = x.std(dim=1)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # a constant channel: leave it
    return tuple(mean.tolist()), tuple(std.tolist())


def _normalise(split: Split, mean: tuple[float, ...], std: tuple[float, ...]) -> Split:
    """Return the split with each channel shifted by ``mean`` and scaled by ``std``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return Split(((split.images - m) / s).contiguous(), split.labels)


def _resize(images: Tensor, size: int) -> Tensor:
    """Resize a batch of [0, 1] images to ``size`` x ``size`` (antialiased when shrinking)."""
    if tuple(images.shape[2:]) == (size, size) or images.shape[0] == 0:
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return out.clamp_(0.0, 1.0)


def _uint8_to_float(images: np.ndarray | Tensor) -> Tensor:
    """Convert uint8 images (N x C x H x W) to float32 in [0, 1]."""
    return torch.as_tensor(images).to(torch.float32).div_(255.0).contiguous()


# ----------------------------------------------------------------------------- Fashion-MNIST


def _load_fashion_mnist(opts: _LoadOptions) -> _RawData:
    """Load Fashion-MNIST from ROOT/FashionMNIST/raw, Debian's package, or a download."""
    import torchvision

    root = opts.data_dir if opts.data_dir is not None else default_data_root()
    raw_dir = root / "FashionMNIST" / "raw"
    if not _has_files(raw_dir, FASHION_MNIST_FILES):
        if _has_files(DEBIAN_FASHION_MNIST_DIR, [f + ".gz" for f in FASHION_MNIST_FILES]):
            extract_debian_fashion_mnist(raw_dir)
        elif not opts.download:
            raise FileNotFoundError(
                f"Fashion-MNIST not found in {raw_dir} nor in {DEBIAN_FASHION_MNIST_DIR}: "
                "apt-get install dataset-fashion-mnist, or pass --data-dir DIR containing "
                "FashionMNIST/raw, or --download."
            )
    splits = {}
    for train in (True, False):
        try:
            ds = torchvision.datasets.FashionMNIST(str(root), train=train,
                                                   download=opts.download)
        except (RuntimeError, ValueError, AssertionError, EOFError, IndexError) as err:
            why = str(err) or type(err).__name__
            raise ValueError(f"{raw_dir} holds a damaged Fashion-MNIST file ({why}): remove "
                             f"{raw_dir} and run again (it is extracted anew from Debian's "
                             "package)") from None
        if len(ds.data) != len(ds.targets) or ds.data.shape[1:] != (28, 28):
            raise ValueError(f"{raw_dir} holds Fashion-MNIST files that do not match "
                             f"({tuple(ds.data.shape)} images, {len(ds.targets)} labels): "
                             f"remove {raw_dir} and run again")
        splits[train] = (_uint8_to_float(ds.data.unsqueeze(1)), ds.targets.to(torch.int64))
        classes = list(ds.classes)
    return _RawData(
        *splits[True], *splits[False], classes, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD
    )


def extract_debian_fashion_mnist(raw_dir: str | Path) -> None:
    """Decompress Debian's Fashion-MNIST ``.gz`` idx files into ``raw_dir``.

    torchvision reads the uncompressed files from ``ROOT/FashionMNIST/raw``; it cannot use
    Debian's files directly because their checksums differ from the ones it downloads.

    Args:
        raw_dir: Destination, normally ``ROOT/FashionMNIST/raw``; created if missing.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        dest = raw_dir / name
        if dest.exists():
            continue
        # Write to a temporary name and rename, so that an interrupted run cannot leave a
        # truncated file that later passes the existence check.
        tmp = raw_dir / f".{name}.tmp{os.getpid()}"
        source = DEBIAN_FASHION_MNIST_DIR / f"{name}.gz"
        try:
            with gzip.open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
            tmp.unlink(missing_ok=True)
            raise ValueError(f"{source} is damaged ({err}): reinstall Debian's "
                             "dataset-fashion-mnist package, or pass --data-dir") from None
        os.replace(tmp, dest)


def _has_files(directory: Path, names: list[str] | tuple[str, ...]) -> bool:
    return all((directory / n).is_file() for n in names)


# ----------------------------------------------------------------------------- CIFAR


def _load_cifar10(opts: _LoadOptions) -> _RawData:
    """Load CIFAR-10 from the python pickle batches."""
    base = _cifar_dir(opts, CIFAR10_DIR, "CIFAR-10", "CIFAR10")
    batches = [_read_pickle(base / f"data_batch_{i}") for i in range(1, 6)]
    test = _read_pickle(base / "test_batch")
    names = cast("Iterable[str | bytes]", _read_pickle(base / "batches.meta")["label_names"])
    classes = [_text(c) for c in names]
    return _RawData(
        *_cifar_arrays(batches, "labels"),
        *_cifar_arrays([test], "labels"),
        classes,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


def _load_cifar100(opts: _LoadOptions) -> _RawData:
    """Load CIFAR-100 (fine labels) from the python pickle files."""
    base = _cifar_dir(opts, CIFAR100_DIR, "CIFAR-100", "CIFAR100")
    train = _read_pickle(base / "train")
    test = _read_pickle(base / "test")
    names = cast("Iterable[str | bytes]", _read_pickle(base / "meta")["fine_label_names"])
    classes = [_text(c) for c in names]
    return _RawData(
        *_cifar_arrays([train], "fine_labels"),
        *_cifar_arrays([test], "fine_labels"),
        classes,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    )


def _cifar_dir(opts: _LoadOptions, folder: str, title: str, tv_class: str) -> Path:
    """Find the CIFAR folder, downloading it through torchvision when allowed."""
    root = opts.data_dir if opts.data_dir is not None else default_data_root()
    base = root / folder
    if base.is_dir():
        return base
    if not opts.download:
        raise FileNotFoundError(
            f"{title} not found in {base}: pass --data-dir DIR containing {folder}/ (the python "
            "version from https://www.cs.toronto.edu/~kriz/cifar.html), or --download."
        )
    import torchvision

    # torchvision downloads, checks md5 sums and unpacks; we then read the files ourselves,
    # the same way as for user-provided ones.
    getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
    return base


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numbers, strings, lists, dicts and numpy arrays only: a CIFAR file names
    no other class, and a crafted one that does is refused instead of running code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
               *((f"numpy.{core}.multiarray", name) for core in ("core", "_core")
                 for name in ("_reconstruct", "scalar")),
               *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core"))}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[str, object]:
    """Read one CIFAR pickle file (arrays and plain data only, see `_ArrayUnpickler`) with
    str keys."""
    if not path.is_file():
        raise FileNotFoundError(f"missing CIFAR file {path}; pass --data-dir or --download")
    try:
        with open(path, "rb") as f:
            # latin1 decodes the Python 2 strings of the original files; files written by
            # Python 3 may still have bytes keys, hence the key conversion.
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a CIFAR data file ({err})") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR data file (it holds a "
                         f"{type(entry).__name__}, not a dict)")
    return {_text(k): v for k, v in entry.items()}


def _text(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _cifar_arrays(entries: list[dict[str, object]], label_key: str) -> tuple[Tensor, Tensor]:
    """Stack CIFAR rows (3072 bytes: the R, G and B planes of a 32x32 image) into tensors."""
    data = np.concatenate([np.asarray(e["data"], dtype=np.uint8) for e in entries])
    labels = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
    return _uint8_to_float(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


# ----------------------------------------------------------------------------- image folder


def _load_imagefolder(opts: _LoadOptions) -> _RawData:
    """Load DATA_DIR/train and DATA_DIR/test class folders, resized once at load time."""
    if opts.data_dir is None:
        raise FileNotFoundError(
            "the imagefolder data set needs --data-dir DIR with train/<class>/ and test/<class>/"
        )
    missing = [p for p in ("train", "test") if not (opts.data_dir / p).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{opts.data_dir} lacks {' and '.join(m + '/' for m in missing)}: the imagefolder "
            "data set needs --data-dir DIR with train/<class>/ and test/<class>/ image folders"
        )
    size = opts.image_size or 32
    train_x, train_y, classes = _read_image_folder(opts.data_dir / "train", size)
    test_x, test_y, test_classes = _read_image_folder(opts.data_dir / "test", size)
    if test_classes != classes:
        raise ValueError(f"train classes {classes} differ from test classes {test_classes}")
    return _RawData(train_x, train_y, test_x, test_y, classes)


def _read_image_folder(path: Path, size: int) -> tuple[Tensor, Tensor, list[str]]:
    import torchvision
    from torchvision.transforms import v2

    transform = v2.Compose(
        [v2.ToImage(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, True)]
    )
    ds = torchvision.datasets.ImageFolder(str(path), transform=transform)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)


# ----------------------------------------------------------------------------- segmentation


def _load_fashion_scenes(opts: _LoadOptions) -> _RawData:
    """Scenes of Fashion-MNIST items (`prune_env.data.scenes`): training scenes from its
    training images, test scenes from its test images; generated once, then cached. The
    scenes are the same for every seed (a fixed data set, as a real one is); the seed draws
    the validation split, as it does for every data set."""
    from prune_env.data.scenes import CLASSES, cached_scenes

    items = _load_fashion_mnist(opts)
    size = opts.image_size or SCENE_SIZE
    if size < 32:
        raise ValueError(f"fashion-scenes: --image-size must be at least 32 (a canvas holding "
                         f"several 28-pixel items), got {size}")
    cache = (opts.data_dir or default_data_root()) / "fashion-scenes"
    n_train, n_test = opts.synthetic_size, max(opts.synthetic_size // 5, 1)
    parts = [cached_scenes(_to_uint8(images), labels, n, size, seed=SCENE_SEED, split=split,
                           cache_dir=cache)
             for images, labels, n, split in ((items.train_images, items.train_labels, n_train,
                                               "train"),
                                              (items.test_images, items.test_labels, n_test,
                                               "test"))]
    (train_images, train_masks), (test_images, test_masks) = parts
    return _RawData(_uint8_to_float(train_images), train_masks, _uint8_to_float(test_images),
                    test_masks, list(CLASSES), task="segmentation")


def _to_uint8(images: Tensor) -> Tensor:
    """Float images in [0, 1] (N x 1 x H x W) back to the uint8 items (N x H x W)."""
    return images.squeeze(1).mul(255.0).round_().to(torch.uint8)


def _load_cityscapes(opts: _LoadOptions) -> _RawData:
    """Cityscapes' fine annotations (`prune_env.data.cityscapes`) at ``image_size`` rows
    (default 128, i.e. 128 x 256); its official val split is the test split."""
    from prune_env.data.cityscapes import read_cityscapes

    root = opts.data_dir if opts.data_dir is not None else default_data_root() / "cityscapes"
    arrays = read_cityscapes(root, opts.image_size or CITYSCAPES_HEIGHT,
                             cache_dir=default_data_root() / "cityscapes-cache")
    return _RawData(_uint8_to_float(arrays.train_images), arrays.train_labels,
                    _uint8_to_float(arrays.val_images), arrays.val_labels, list(arrays.classes),
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, task="segmentation")


# ----------------------------------------------------------------------------- synthetic


def _load_synthetic(opts: _LoadOptions) -> _RawData:
    """Generate the synthetic shapes: train and test drawn from one seeded stream."""
    if opts.synthetic_size < len(SYNTHETIC_CLASSES):
        raise ValueError(f"synthetic_size must be at least 10, got {opts.synthetic_size}")
    size = opts.image_size or 32
    n_train, n_test = opts.synthetic_size, max(opts.synthetic_size // 5, 1)
    images, labels = make_synthetic(n_train + n_test, size, seed=opts.seed)
    return _RawData(
        images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], SYNTHETIC_CLASSES
    )


class _ShapeParams(NamedTuple):
    """Per-image geometry, each array shaped (n, 1, 1) or (n, H, W) to broadcast over pixels."""

    dx: np.ndarray  # column minus the shape's centre column
    dy: np.ndarray  # row minus the shape's centre row
    r: np.ndarray  # half-extent of the shape in pixels
    period: np.ndarray  # stripe period in pixels
    phase: np.ndarray  # stripe phase in radians
    angle: np.ndarray  # orientation of the two dots
    sign: np.ndarray  # +1 or -1: direction of the diagonal stripes

    def subset(self, mask: np.ndarray) -> _ShapeParams:
        return _ShapeParams(*(a[mask] for a in self))


def _in_box(p: _ShapeParams) -> np.ndarray:
    return (np.abs(p.dx) <= p.r) & (np.abs(p.dy) <= p.r)


def _stripes(coord: np.ndarray, p: _ShapeParams) -> np.ndarray:
    return np.sin(2 * np.pi * coord / p.period + p.phase) > 0


def _circle(p: _ShapeParams) -> np.ndarray:
    return p.dx**2 + p.dy**2 <= p.r**2


def _square(p: _ShapeParams) -> np.ndarray:
    return (np.abs(p.dx) <= 0.8 * p.r) & (np.abs(p.dy) <= 0.8 * p.r)


def _triangle(p: _ShapeParams) -> np.ndarray:
    # Apex at the top (dy = -r), base at dy = 0.8 r with half-width r.
    return (p.dy <= 0.8 * p.r) & (np.abs(p.dx) <= (p.dy + p.r) / 1.8)


def _cross(p: _ShapeParams) -> np.ndarray:
    w = 0.25 * p.r
    bar_h = (np.abs(p.dy) <= w) & (np.abs(p.dx) <= p.r)
    bar_v = (np.abs(p.dx) <= w) & (np.abs(p.dy) <= p.r)
    return bar_h | bar_v


def _ring(p: _ShapeParams) -> np.ndarray:
    d2 = p.dx**2 + p.dy**2
    return (d2 <= p.r**2) & (d2 >= (0.6 * p.r) ** 2)


def _h_stripes(p: _ShapeParams) -> np.ndarray:
    return _in_box(p) & _stripes(p.dy, p)


def _v_stripes(p: _ShapeParams) -> np.ndarray:
    return _in_box(p) & _stripes(p.dx, p)


def _d_stripes(p: _ShapeParams) -> np.ndarray:
    # Either diagonal direction, so that a horizontal flip keeps the class.
    return _in_box(p) & _stripes((p.dx + p.sign * p.dy) / math.sqrt(2), p)


def _checkerboard(p: _ShapeParams) -> np.ndarray:
    cell = p.period / 2
    return _in_box(p) & ((np.floor(p.dx / cell) + np.floor(p.dy / cell)) % 2 == 0)


def _two_dots(p: _ShapeParams) -> np.ndarray:
    ox, oy = 0.6 * p.r * np.cos(p.angle), 0.6 * p.r * np.sin(p.angle)
    rd2 = (0.38 * p.r) ** 2
    dot_a = (p.dx - ox) ** 2 + (p.dy - oy) ** 2 <= rd2
    dot_b = (p.dx + ox) ** 2 + (p.dy + oy) ** 2 <= rd2
    return dot_a | dot_b


_SHAPES: tuple[Callable[[_ShapeParams], np.ndarray], ...] = (
    _circle,
    _square,
    _triangle,
    _cross,
    _ring,
    _h_stripes,
    _v_stripes,
    _d_stripes,
    _checkerboard,
    _two_dots,
)


def make_synthetic(n: int, size: int = 32, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Generate ``n`` grey images of the ten ``SYNTHETIC_CLASSES``, balanced over classes.

    Each image has one shape or texture patch at a random position and size, with random
    foreground and background intensities and Gaussian noise. Vectorised per class.

    Args:
        n: Number of images.
        size: Image side length in pixels.
        seed: Seed of the numpy generator; the same seed gives the same images.

    Returns:
        Images (n x 1 x size x size, float32 in [0, 1]) and int64 labels (n).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(_SHAPES))
    r = rng.uniform(0.2, 0.38, n) * size
    cx = rng.uniform(r, size - 1 - r)
    cy = rng.uniform(r, size - 1 - r)
    fg = rng.uniform(0.55, 1.0, n)
    bg = rng.uniform(0.0, 0.3, n)
    noise_sd = rng.uniform(0.02, 0.1, n)

    def col(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32)[:, None, None]

    coords = np.arange(size, dtype=np.float32)
    params = _ShapeParams(
        dx=coords[None, None, :] - col(cx),
        dy=coords[None, :, None] - col(cy),
        r=col(r),
        period=col(rng.uniform(0.1, 0.18, n) * size),
        phase=col(rng.uniform(0.0, 2 * np.pi, n)),
        angle=col(rng.uniform(0.0, np.pi, n)),
        sign=col(rng.choice([-1.0, 1.0], n)),
    )
    mask = np.zeros((n, size, size), dtype=bool)
    for label, shape in enumerate(_SHAPES):
        chosen = labels == label
        mask[chosen] = np.broadcast_to(shape(params.subset(chosen)), (chosen.sum(), size, size))

    images = col(bg) + col(fg - bg) * mask
    images += col(noise_sd) * rng.standard_normal((n, size, size), dtype=np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


_LOADERS: dict[str, Callable[[_LoadOptions], _RawData]] = {
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagefolder": _load_imagefolder,
    "synthetic": _load_synthetic,
    "fashion-scenes": _load_fashion_scenes,
    "cityscapes": _load_cityscapes,
}


# ----------------------------------------------------------------------------- batches


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield one epoch of (images, labels) batches; the last batch may be smaller.

    Args:
        split: The split to iterate over.
        batch_size: Images per batch (at least 1).
        shuffle: Visit the images in a random order.
        generator: Source of randomness for the order and the augmentation; ``None`` uses
            torch's global generator.
        augment: Apply ``augment_batch`` (random flips and padded crops) to every batch.

    Returns:
        An iterator of image batches (B x C x H x W) and label batches (B).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            images = split.images[start : start + batch_size]
            labels = split.labels[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            images, labels = split.images[idx], split.labels[idx]
        if augment and labels.dim() > 1:  # segmentation: the masks move with their images
            images, labels = augment_batch(images, labels, generator=generator)
        elif augment:
            images = cast(Tensor, augment_batch(images, generator=generator))
        yield images, labels


def infinite_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    augment: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield batches forever, epoch after epoch (reshuffled each epoch when ``shuffle``).

    Meant for a fixed number of fine-tuning steps: ``itertools.islice(it, steps)``.

    Args:
        split: The split to iterate over; must not be empty.
        batch_size: Images per batch (at least 1).
        shuffle: Visit the images in a new random order every epoch.
        generator: Source of randomness; ``None`` uses torch's global generator.
        augment: Apply ``augment_batch`` to every batch.

    Returns:
        An endless iterator of (images, labels) batches.
    """
    if len(split) == 0:
        raise ValueError("cannot draw batches from an empty split")
    while True:
        yield from iterate_batches(
            split, batch_size, shuffle=shuffle, generator=generator, augment=augment
        )


def crop_padding(height: int) -> int:
    """Padding of the random crop: 4 pixels for 32x32 images, 2 for smaller (28x28) ones.

    Args:
        height: Image height in pixels.

    Returns:
        The padding in pixels on each side.
    """
    return 4 if height >= 32 else 2


def augment_batch(images: Tensor, masks: Tensor | None = None, *,
                  generator: torch.Generator | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Randomly flip each image horizontally and crop it from a zero-padded copy.

    The whole batch is processed with tensor indexing, without a per-image loop. Padding is 0
    in normalised space, i.e. the mean colour, which looks less artificial than black.

    Args:
        images: Batch (B x C x H x W); not modified.
        masks: Per-pixel labels (B x H x W) of a segmentation batch: flipped and cropped with
            their images, padding labelled `IGNORE_INDEX` (no loss where the image is padding).
        generator: Source of randomness; ``None`` uses torch's global generator.

    Returns:
        A new batch of the same shape (and the masks moved with it, when given).
    """
    b, _, h, _ = images.shape
    # drawn on the host with the (host) generator, so a seed gives the same batches on any
    # device; applied where the images are
    dev = images.device
    flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
    pad = crop_padding(h)
    off_y = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    off_x = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    out = _flip_crop(images, flip, off_y, off_x, pad, 0.0)
    if masks is None:
        return out
    moved = _flip_crop(masks.unsqueeze(1), flip, off_y, off_x, pad, IGNORE_INDEX)
    return out, moved.squeeze(1)


def _flip_crop(x: Tensor, flip: Tensor, off_y: Tensor, off_x: Tensor, pad: int,
               fill: float) -> Tensor:
    """``x`` (B x C x H x W) flipped where ``flip``, padded by ``pad`` with ``fill`` and
    cropped back to H x W at the offsets."""
    b, c, h, w = x.shape
    dev = x.device
    out = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(out, (pad, pad, pad, pad), value=fill)
    rows = (off_y.view(-1, 1) + torch.arange(h, device=dev)).view(b, 1, h, 1)
    cols = (off_x.view(-1, 1) + torch.arange(w, device=dev)).view(b, 1, 1, w)
    return padded[torch.arange(b, device=dev).view(-1, 1, 1, 1),
                  torch.arange(c, device=dev).view(1, -1, 1, 1), rows, cols]
