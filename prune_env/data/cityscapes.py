"""Read the Cityscapes semantic segmentation data set from its official folder layout.

Cityscapes (https://www.cityscapes-dataset.com) needs a free registration, so nothing here
downloads it. Unzipping ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` into
one folder ROOT gives::

    ROOT/leftImg8bit/{train,val,test}/CITY/CITY_XXXXXX_YYYYYY_leftImg8bit.png   (RGB frames)
    ROOT/gtFine/{train,val,test}/CITY/CITY_XXXXXX_YYYYYY_gtFine_labelIds.png    (8-bit ids)

``gtFine`` also holds ``*_color.png``, ``*_instanceIds.png`` and ``*_polygons.json`` files,
which are not read. Decisions:

- The official ``val`` split serves as the test split: the labels of ``test`` are not public.
- The label PNGs hold the 34 Cityscapes label ids; training uses the 19 evaluated classes
  ("train ids" 0..18), with every other id, and any value missing from torchvision's table,
  mapped to 255, the usual ignore index of the loss and the metrics.
- Frames (2048 x 1024) are resized once, to ``height`` x ``2 * height``: images bilinearly
  with antialiasing, like the other data sets in ``datasets.py``; label maps by nearest
  neighbour, since interpolating ids would invent classes along every boundary.
- Images stay uint8 (a quarter of float32's memory); the caller converts them
  (``datasets._uint8_to_float``). Labels are int64, what ``cross_entropy`` takes.
- Decoding 3 475 PNGs of 2 Mpx takes minutes, so the resized arrays can be cached as a
  plain ``.npz`` file (read with ``allow_pickle=False``: no data file may run code). Its name
  holds the height and a hash of the file list, so that a changed data folder is read anew.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255
MIN_HEIGHT = 8
SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

# Bump when the decoding or resizing changes: old cache files then no longer match.
_CACHE_VERSION = 1
_CACHE_KEYS = ("train_images", "train_labels", "val_images", "val_labels")


@dataclass(frozen=True)
class CityscapesArrays:
    """Decoded, resized Cityscapes splits.

    Images are uint8 (N x 3 x height x 2*height); labels are int64 train ids
    (N x height x 2*height), 0..18 or ``IGNORE_INDEX``. ``val`` is the official val split.
    """

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    classes: tuple[str, ...]  # the 19 train-id class names, in train-id order


def read_cityscapes(root: str | Path, height: int, *, cache_dir: Path | None = None,
                    progress: bool = True) -> CityscapesArrays:
    """Read the train and val splits of Cityscapes, resized to ``height`` x ``2 * height``.

    Args:
        root: The folder holding ``leftImg8bit/`` and ``gtFine/`` (see the module docstring).
        height: Output height in pixels, at least ``MIN_HEIGHT``; the width is twice that.
        cache_dir: Where to keep the decoded arrays (``cityscapes-HEIGHT-HASH.npz``);
            ``None`` decodes every time.
        progress: Show a progress bar while decoding.

    Raises:
        FileNotFoundError: A split folder is missing or empty, or an image lacks its label
            file or the reverse; the message says how to get the data.
        ValueError: ``height`` is too small, or a frame is not 2:1 or not as expected.
    """
    if height < MIN_HEIGHT:
        raise ValueError(f"height must be at least {MIN_HEIGHT}, got {height}")
    root = Path(root).expanduser()
    pairs = {split: _frame_pairs(root, split) for split in SPLITS}
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"cityscapes-{height}-{_file_list_hash(root, pairs)}.npz"
        arrays = _read_cache(cache, height)
        if arrays is not None:
            return _to_result(arrays)
    arrays = _decode_all(pairs, height, progress)
    if cache is not None:
        _write_cache(cache, arrays)
    return _to_result(arrays)


# ----------------------------------------------------------------------------- label ids


@lru_cache(maxsize=1)
def train_id_table() -> np.ndarray:
    """A 256-entry uint8 lookup table from Cityscapes label id to train id (255: ignore)."""
    import torchvision

    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in torchvision.datasets.Cityscapes.classes:
        # "license plate" has id -1: it never appears in a label PNG, so it has no entry.
        if 0 <= c.id < 256 and 0 <= c.train_id < IGNORE_INDEX:
            table[c.id] = c.train_id
    table.flags.writeable = False  # shared through lru_cache: nobody may change it
    return table


@lru_cache(maxsize=1)
def train_classes() -> tuple[str, ...]:
    """The names of the evaluated classes, indexed by train id (19 names)."""
    import torchvision

    named = {c.train_id: c.name for c in torchvision.datasets.Cityscapes.classes
             if 0 <= c.train_id < IGNORE_INDEX}
    return tuple(named[i] for i in range(len(named)))


# ----------------------------------------------------------------------------- file list


def _missing_data_error(what: Path, problem: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Cityscapes: {what} {problem}. Cityscapes needs a (free) registration at "
        "https://www.cityscapes-dataset.com; download leftImg8bit_trainvaltest.zip and "
        "gtFine_trainvaltest.zip, unzip both into one folder ROOT so that "
        "ROOT/leftImg8bit/train/aachen/... exists, and pass that folder as --data-dir."
    )


def _frame_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of one split, sorted; every image must have its label and back."""
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise _missing_data_error(folder, "is missing")
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    labels = sorted(label_dir.glob(f"*/*{LABEL_SUFFIX}"))
    if not images:
        raise _missing_data_error(image_dir, f"holds no CITY/*{IMAGE_SUFFIX} files")
    if not labels:
        raise _missing_data_error(label_dir, f"holds no CITY/*{LABEL_SUFFIX} files")
    pairs = [(image, _label_path(label_dir, image)) for image in images]
    for _, label in pairs:
        if not label.is_file():
            raise FileNotFoundError(f"Cityscapes: missing label file {label} for the image in "
                                    f"{image_dir}; unzip gtFine_trainvaltest.zip into {root}")
    paired = {label for _, label in pairs}
    for label in labels:
        if label not in paired:
            image = image_dir / label.parent.name / (_frame_name(label, LABEL_SUFFIX)
                                                     + IMAGE_SUFFIX)
            raise FileNotFoundError(f"Cityscapes: missing image file {image} for the label "
                                    f"{label}; unzip leftImg8bit_trainvaltest.zip into {root}")
    return pairs


def _frame_name(path: Path, suffix: str) -> str:
    """CITY_XXXXXX_YYYYYY from a file name ending in ``suffix``."""
    return path.name[: -len(suffix)]


def _label_path(label_dir: Path, image: Path) -> Path:
    return label_dir / image.parent.name / (_frame_name(image, IMAGE_SUFFIX) + LABEL_SUFFIX)


def _file_list_hash(root: Path, pairs: dict[str, list[tuple[Path, Path]]]) -> str:
    """A short hash of the relative names and sizes of all files read (and the cache format).

    Sizes rather than modification times: copying or unzipping the data anew keeps the key.
    """
    digest = hashlib.sha256(f"v{_CACHE_VERSION}\n".encode())
    for split in SPLITS:
        for path in (p for pair in pairs[split] for p in pair):
            digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n"
                          .encode())
    return digest.hexdigest()[:12]


# ----------------------------------------------------------------------------- decoding


def _decode_all(pairs: dict[str, list[tuple[Path, Path]]], height: int, progress: bool
                ) -> dict[str, np.ndarray]:
    """Decode and resize every frame: uint8 images (N x 3 x h x 2h) and train ids (N x h x 2h)."""
    from tqdm.auto import tqdm

    total = sum(len(p) for p in pairs.values())
    arrays: dict[str, np.ndarray] = {}
    with tqdm(total=total, desc="cityscapes", unit="frame", disable=not progress) as bar:
        for split in SPLITS:
            n = len(pairs[split])
            # Filled in place: a list of frames and np.stack would need twice the memory.
            images = np.empty((n, 3, height, 2 * height), dtype=np.uint8)
            labels = np.empty((n, height, 2 * height), dtype=np.uint8)
            for i, (image_path, label_path) in enumerate(pairs[split]):
                try:
                    images[i], labels[i] = _decode_frame(image_path, label_path, height)
                except OSError as err:  # PIL's errors do not always name the file
                    raise ValueError(f"Cityscapes: cannot decode {image_path} or its label "
                                     f"{label_path} ({err})") from err
                bar.update()
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def _decode_frame(image_path: Path, label_path: Path, height: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One frame, resized: a uint8 image (3 x h x 2h) and its train ids (h x 2h, uint8)."""
    from PIL import Image

    with Image.open(image_path) as img:
        _check_aspect(image_path, img.size)
        size = img.size
        rgb = np.array(img.convert("RGB"))  # a writable copy: torch.from_numpy wants one
    with Image.open(label_path) as lab:
        if lab.size != size:
            raise ValueError(f"{label_path} is {lab.size[0]}x{lab.size[1]} pixels but its "
                             f"image {image_path} is {size[0]}x{size[1]}")
        if lab.mode != "L":
            raise ValueError(f"{label_path} has PIL mode {lab.mode!r}; Cityscapes labelIds "
                             "files are 8-bit greyscale ('L')")
        ids = np.asarray(lab)
    return _resize_image(rgb, height), train_id_table()[_resize_labels(ids, height)]


def _check_aspect(path: Path, size: tuple[int, int]) -> None:
    """Refuse frames that are not twice as wide as high: resizing would distort them."""
    width, height = size
    if width != 2 * height:
        raise ValueError(f"{path} is {width}x{height} pixels; Cityscapes frames are 2:1 "
                         "(2048x1024), other aspects are not supported")


def _resize_image(rgb: np.ndarray, height: int) -> np.ndarray:
    """Resize an H x W x 3 uint8 frame to 3 x height x 2*height, bilinear with antialiasing."""
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    if chw.shape[1] == height:
        return chw.contiguous().numpy()
    x = chw.unsqueeze(0).to(torch.float32)
    x = F.interpolate(x, size=(height, 2 * height), mode="bilinear", antialias=True)
    return x[0].round_().clamp_(0, 255).to(torch.uint8).numpy()


def _resize_labels(ids: np.ndarray, height: int) -> np.ndarray:
    """Resize an H x W id map to height x 2*height by nearest neighbour (pixel centres)."""
    src_h, src_w = ids.shape
    if src_h == height:
        return ids
    rows = _nearest_indices(src_h, height)
    cols = _nearest_indices(src_w, 2 * height)
    return ids[rows[:, None], cols[None, :]]


def _nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index nearest each destination pixel centre (what PIL's NEAREST picks)."""
    return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.int64), src - 1)


# ----------------------------------------------------------------------------- cache


def _read_cache(path: Path, height: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or not a valid cache file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _CACHE_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None  # a damaged or foreign file: decode again and overwrite it
    frame = (height, 2 * height)
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if (images.dtype != np.uint8 or labels.dtype != np.uint8
                or images.shape[1:] != (3, *frame) or labels.shape[1:] != frame
                or len(images) != len(labels)):
            return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save the arrays as a plain .npz, through a temporary name so that an interrupted
    run cannot leave a truncated file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _to_result(arrays: dict[str, np.ndarray]) -> CityscapesArrays:
    return CityscapesArrays(
        train_images=torch.from_numpy(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"]).to(torch.int64),
        val_images=torch.from_numpy(arrays["val_images"]),
        val_labels=torch.from_numpy(arrays["val_labels"]).to(torch.int64),
        classes=train_classes(),
    )
