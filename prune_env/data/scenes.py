"""Fashion-MNIST scenes: an offline semantic-segmentation data set made from real images.

A scene is a black ``size`` x ``size`` canvas on which ``k`` Fashion-MNIST items (``k``
uniform in ``per_scene``, both ends included) are drawn one after the other:

- each item is picked uniformly at random from the given images, rescaled by a random factor
  in ``SCALE_RANGE`` (nearest neighbour: the image stays uint8 and every output pixel is a
  real pixel of the item, so no blurred rim of in-between values appears around it), and
  placed at a random position fully inside the canvas;
- the item's mask is computed on the rescaled item (so the mask and the drawn pixels always
  agree): its pixels brighter than ``THRESHOLD``, plus the holes they enclose (see
  ``item_masks``);
- where the mask holds, the item replaces the canvas and the label; elsewhere the canvas
  keeps what was there, so later items occlude earlier ones only where they really are.

Labels (int64, one per pixel): 0 is background, ``c + 1`` is Fashion-MNIST class ``c``
(``CLASSES[c + 1]``), i.e. the class of the topmost item whose mask holds there. Hence every
pixel brighter than ``THRESHOLD`` is labelled with a class, and a labelled pixel is brighter
than ``THRESHOLD`` unless it lies in a filled hole of its item.

The caller builds training scenes only from Fashion-MNIST's training images and test scenes
only from its test images, so that no item seen in training appears in a test scene.
``cached_scenes`` generates a set once and keeps it as an ``.npz`` file (no pickles: loading
it cannot run code).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

CLASSES = [
    "background",
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]

# Fashion-MNIST's background is exactly 0, but items have a faint rim of anti-aliased
# pixels (values 1..10 of 255) that are invisible against black; counting them as the item
# would label a halo around every item that no model could tell from background.
THRESHOLD = 10

# Random rescaling factor of an item (28 px -> 21..42 px): varies object size without
# shrinking items until their class is unrecognisable.
SCALE_RANGE = (0.75, 1.5)

# Bumped whenever the scenes a seed gives change, so stale cache files are not read.
CACHE_VERSION = "v1"

# Scenes rendered at once: bounds the temporary arrays (~ CHUNK x 42 x 42 bytes a few times
# over) without changing the result, since all random draws are made up front.
_CHUNK = 4096

# Masks are flood-filled as rows packed into 64-bit words.
_MAX_WIDTH = 64
_ONE = np.uint64(1)


class _Placements(NamedTuple):
    """Random draws of all scenes, one column per item slot (n x max items)."""

    active: np.ndarray  # bool: slot j of scene i holds an item (j < k_i)
    item: np.ndarray  # index into the items
    height: np.ndarray  # rescaled size in pixels
    width: np.ndarray
    top: np.ndarray  # position of the rescaled item's top-left corner on the canvas
    left: np.ndarray

    def rows(self, index: np.ndarray) -> _Placements:
        return _Placements(*(a[index] for a in self))


def compose_scenes(
    items: Tensor,
    item_labels: Tensor,
    n: int,
    size: int,
    *,
    seed: int,
    per_scene: tuple[int, int] = (2, 4),
) -> tuple[Tensor, Tensor]:
    """Compose ``n`` segmentation scenes from Fashion-MNIST items (see the module docstring).

    Args:
        items: uint8 images (N x 28 x 28; other sizes up to 42 px wide work too).
        item_labels: int64 classes of the items (N), in 0..9.
        n: Number of scenes.
        size: Side length of a scene in pixels; items larger than it are shrunk to fit.
        seed: Seed of the numpy generator drawing everything; the global RNGs are untouched,
            and the same arguments give the same scenes.
        per_scene: Least and most items in a scene, both included.

    Returns:
        Images (uint8, n x 1 x size x size) and labels (int64, n x size x size, 0 background,
        ``c + 1`` for class ``c``).

    Raises:
        ValueError: Invalid shapes, dtypes, classes, counts or sizes.
    """
    images_np, labels_np = _check_inputs(items, item_labels, n, size, per_scene)
    box = _box_shape(images_np.shape[1:], size)
    rng = np.random.default_rng(seed)
    placements = _draw_placements(rng, n, len(images_np), images_np.shape[1:], size, box,
                                  per_scene)
    images, labels = _render(images_np, labels_np, placements, size, box)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).to(torch.int64)


def cached_scenes(
    items: Tensor,
    item_labels: Tensor,
    n: int,
    size: int,
    *,
    seed: int,
    split: str,
    cache_dir: Path,
) -> tuple[Tensor, Tensor]:
    """``compose_scenes`` with the default ``per_scene``, generated once and then read back.

    The file ``cache_dir/fashion-scenes-{split}-{n}-{size}-{seed}-v1.npz`` is keyed by the
    split's name, not by the items' content: pass the same items for the same split (the
    training or test images of Fashion-MNIST). A file that is damaged or does not match
    ``n`` and ``size`` is generated anew.
    """
    path = Path(cache_dir) / f"fashion-scenes-{split}-{n}-{size}-{seed}-{CACHE_VERSION}.npz"
    cached = _read_cache(path, n, size)
    if cached is not None:
        return cached
    images, labels = compose_scenes(items, item_labels, n, size, seed=seed)
    _write_cache(path, images, labels)
    return images, labels


def item_masks(images: np.ndarray) -> np.ndarray:
    """Where each item is: pixels brighter than ``THRESHOLD`` and the holes they enclose.

    Items have dark pixels inside them (prints, folds, shadows, a bag's handle opening):
    without filling, those would be labelled background in the middle of a shirt. A hole is
    a dark region that cannot reach the image's border through dark pixels (4-neighbours, so
    diagonally touching bright pixels close a hole). Unlike a row or column fill, this keeps
    open gaps that really are background, such as between a trouser's legs or a sandal's
    straps.

    Args:
        images: uint8 items (m x H x W), W at most 64.

    Returns:
        The bool masks (m x H x W).
    """
    bright = images > THRESHOLD
    return ~_reach_from_border(~bright)


# ----------------------------------------------------------------------------- drawing


def _check_inputs(items: Tensor, item_labels: Tensor, n: int, size: int,
                  per_scene: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate the arguments; return the items and labels as numpy arrays."""
    if items.dtype != torch.uint8 or items.ndim != 3 or items.shape[0] == 0:
        raise ValueError(f"items must be uint8 N x H x W with N > 0, got {items.dtype} "
                         f"{tuple(items.shape)}")
    if item_labels.shape != (items.shape[0],):
        raise ValueError(f"{items.shape[0]} items but labels of shape {tuple(item_labels.shape)}")
    labels = item_labels.detach().cpu().numpy().astype(np.int64)
    if labels.min() < 0 or labels.max() > len(CLASSES) - 2:
        raise ValueError(f"item labels must be in 0..{len(CLASSES) - 2}, got "
                         f"{labels.min()}..{labels.max()}")
    if n < 0 or size < 1:
        raise ValueError(f"need n >= 0 and size >= 1, got n={n}, size={size}")
    low, high = per_scene
    if not 0 <= low <= high or high < 1:
        raise ValueError(f"per_scene must be (low, high) with 0 <= low <= high, 1 <= high, "
                         f"got {per_scene}")
    return items.detach().cpu().numpy(), labels


def _box_shape(item_shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """The box every rescaled item is drawn in: its largest size, capped at the canvas."""
    h, w = item_shape
    box = (min(size, int(np.ceil(h * SCALE_RANGE[1]))), min(size, int(np.ceil(w * SCALE_RANGE[1]))))
    if box[1] > _MAX_WIDTH:
        raise ValueError(f"items rescaled to {box[1]} px exceed the {_MAX_WIDTH} px that "
                         f"masks support: use items at most {int(_MAX_WIDTH / SCALE_RANGE[1])} "
                         "px wide")
    return box


def _draw_placements(rng: np.random.Generator, n: int, n_items: int,
                     item_shape: tuple[int, ...], size: int, box: tuple[int, int],
                     per_scene: tuple[int, int]) -> _Placements:
    """Draw every scene's items, scales and positions at once (slots beyond k are unused)."""
    slots = per_scene[1]
    k = rng.integers(per_scene[0], per_scene[1] + 1, n)
    item = rng.integers(0, n_items, (n, slots))
    scale = rng.uniform(*SCALE_RANGE, (n, slots))
    height = np.clip(np.rint(item_shape[0] * scale), 1, box[0]).astype(np.int64)
    width = np.clip(np.rint(item_shape[1] * scale), 1, box[1]).astype(np.int64)
    # Uniform over the positions that keep the whole item on the canvas.
    top = (rng.random((n, slots)) * (size - height + 1)).astype(np.int64)
    left = (rng.random((n, slots)) * (size - width + 1)).astype(np.int64)
    active = np.arange(slots)[None, :] < k[:, None]
    return _Placements(active, item, height, width, top, left)


# ----------------------------------------------------------------------------- rendering


def _render(items: np.ndarray, item_labels: np.ndarray, placements: _Placements, size: int,
            box: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw the placed items into uint8 images and labels (n x size x size), chunk by chunk."""
    n = len(placements.active)
    images = np.zeros((n, size, size), dtype=np.uint8)
    labels = np.zeros((n, size, size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        part = placements.rows(np.arange(start, min(n, start + _CHUNK)))
        images[start:start + _CHUNK], labels[start:start + _CHUNK] = _render_chunk(
            items, item_labels, part, size, box)
    return images, labels


def _render_chunk(items: np.ndarray, item_labels: np.ndarray, placements: _Placements,
                  size: int, box: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw one chunk's items slot by slot, each slot for all its scenes at once."""
    m = len(placements.active)
    # Padded by a box on the bottom and right, so that a whole box pasted at any position
    # stays inside (its part beyond the item is masked out anyway).
    canvas = np.zeros((m, size + box[0], size + box[1]), dtype=np.uint8)
    classes = np.zeros_like(canvas)
    for slot in range(placements.active.shape[1]):
        scenes = np.flatnonzero(placements.active[:, slot])
        if len(scenes) == 0:
            continue
        p = placements.rows(scenes)
        boxed = _rescaled(items, p.item[:, slot], p.height[:, slot], p.width[:, slot], box)
        mask = item_masks(boxed)
        cls = (item_labels[p.item[:, slot]] + 1).astype(np.uint8)[:, None, None]
        where = (scenes[:, None, None],
                 (p.top[:, slot, None] + np.arange(box[0]))[:, :, None],
                 (p.left[:, slot, None] + np.arange(box[1]))[:, None, :])
        canvas[where] = np.where(mask, boxed, canvas[where])
        classes[where] = np.where(mask, cls, classes[where])
    return canvas[:, :size, :size], classes[:, :size, :size]


def _rescaled(items: np.ndarray, index: np.ndarray, height: np.ndarray, width: np.ndarray,
              box: tuple[int, int]) -> np.ndarray:
    """Items resized (nearest neighbour) to height x width, in the top-left of black boxes."""
    h, w = items.shape[1:]
    rows, row_in = _nearest(h, height, box[0])
    cols, col_in = _nearest(w, width, box[1])
    boxed = items[index[:, None, None], rows[:, :, None], cols[:, None, :]]
    boxed *= row_in[:, :, None] & col_in[:, None, :]
    return boxed


def _nearest(source: int, target: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index of each of ``box`` output pixels (pixel centres aligned), and whether
    the output pixel is inside the resized item (``target`` pixels) at all."""
    out = np.arange(box)[None, :]
    index = ((2 * out + 1) * source) // (2 * target[:, None])
    return np.minimum(index, source - 1), out < target[:, None]


# ----------------------------------------------------------------------------- hole filling


def _reach_from_border(dark: np.ndarray) -> np.ndarray:
    """The dark pixels connected (4-neighbours) through dark pixels to the image border.

    A flood fill on rows packed into 64-bit words: one step grows the reached set by one
    pixel in all four directions for every image at once, with a few whole-array bit
    operations, so tens of thousands of masks take a fraction of a second.
    """
    m, h, w = dark.shape
    full = np.uint64((1 << w) - 1) if w < 64 else np.uint64(2**64 - 1)
    free = _pack_rows(dark)
    border = np.full(h, _ONE | (_ONE << np.uint64(w - 1)), dtype=np.uint64)
    border[[0, -1]] = full
    reached = free & border
    while True:
        grown = reached | (reached << _ONE) | (reached >> _ONE)
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= free  # shifted-out bits beyond the width are never free
        if np.array_equal(grown, reached):
            return _unpack_rows(reached, w)
        reached = grown


def _pack_rows(bits: np.ndarray) -> np.ndarray:
    """bool m x H x W (W <= 64) -> uint64 m x H, pixel x in bit x."""
    m, h, _ = bits.shape
    packed = np.packbits(bits, axis=-1, bitorder="little")
    words = np.zeros((m, h, 8), dtype=np.uint8)
    words[..., :packed.shape[-1]] = packed
    return words.view("<u8").reshape(m, h)


def _unpack_rows(words: np.ndarray, width: int) -> np.ndarray:
    """uint64 m x H -> bool m x H x width (the inverse of ``_pack_rows``)."""
    m, h = words.shape
    as_bytes = np.ascontiguousarray(words, dtype="<u8").view(np.uint8).reshape(m, h, 8)
    return np.unpackbits(as_bytes, axis=-1, count=width, bitorder="little").astype(bool)


# ----------------------------------------------------------------------------- cache


def _read_cache(path: Path, n: int, size: int) -> tuple[Tensor, Tensor] | None:
    """The cached scenes, or None when the file is missing, damaged or of other shapes."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if (images.shape != (n, 1, size, size) or labels.shape != (n, size, size)
            or images.dtype != np.uint8 or labels.dtype != np.uint8):
        return None
    return torch.from_numpy(images), torch.from_numpy(labels).to(torch.int64)


def _write_cache(path: Path, images: Tensor, labels: Tensor) -> None:
    """Write the scenes to a temporary name and rename it, so that an interrupted run cannot
    leave a truncated file behind. Labels are stored as uint8 (a eighth of int64's size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez(f, images=images.numpy(), labels=labels.to(torch.uint8).numpy())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
