"""Tests of prune_env.data.scenes: Fashion-MNIST items composed into segmentation scenes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prune_env.data import datasets as D
from prune_env.data import scenes as S

THR = S.THRESHOLD


def blob_items(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ellipses of random size with speckled insides (some dark pixels: holes to fill)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:28, :28]
    cy, cx = rng.uniform(10, 18, (2, n, 1, 1))
    ry, rx = rng.uniform(5, 13, (2, n, 1, 1))
    inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    values = rng.integers(0, 256, (n, 28, 28)) * inside
    return torch.from_numpy(values.astype(np.uint8)), torch.from_numpy(np.arange(n) % 10)


def solid(value: int, side: int = 28) -> np.ndarray:
    return np.full((side, side), value, dtype=np.uint8)


def ring(value: int = 200) -> np.ndarray:
    """A square outline, 4 px thick, with a dark inside: a hole."""
    item = solid(value)
    item[4:-4, 4:-4] = 0
    return item


def cup(value: int = 200) -> np.ndarray:
    """The ring with its top side removed: its dark inside is open, not a hole."""
    item = ring(value)
    item[:4, 4:-4] = 0
    return item


def render(items: list[np.ndarray], classes: list[int], top: list[int], left: list[int],
           size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """One scene with the given items drawn in the given order at the given positions."""
    k = len(items)
    placements = S._Placements(
        active=np.ones((1, k), dtype=bool), item=np.arange(k)[None],
        height=np.full((1, k), 28), width=np.full((1, k), 28),
        top=np.array([top]), left=np.array([left]))
    images, labels = S._render(np.stack(items), np.array(classes), placements, size,
                               S._box_shape((28, 28), size))
    return images[0], labels[0]


def assert_labels_follow_pixels(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Bright pixels are labelled; a labelled dark pixel is in a filled hole of its item.

    A hole pixel's four neighbours all belong to its item's mask, and later items only
    relabel pixels, so they are all labelled (and it is not on the canvas's border).
    """
    img = images[:, 0]
    assert (labels[img > THR] > 0).all()
    labelled = labels > 0
    dark = labelled & (img <= THR)
    assert not dark[:, [0, -1], :].any() and not dark[:, :, [0, -1]].any()
    padded = torch.nn.functional.pad(labelled, (1, 1, 1, 1))
    neighbours = (padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1]
                  & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:])
    assert neighbours[dark].all()


# ----------------------------------------------------------------------------- composition


def test_shapes_dtypes_and_classes() -> None:
    items, labels = blob_items()
    images, seg = S.compose_scenes(items, labels, 30, 48, seed=0)
    assert images.shape == (30, 1, 48, 48) and images.dtype == torch.uint8
    assert seg.shape == (30, 48, 48) and seg.dtype == torch.int64
    assert seg.min() >= 0 and seg.max() <= 10
    assert len(S.CLASSES) == 11 and S.CLASSES[0] == "background"
    assert (seg == 0).any() and (seg > 0).any()


def test_same_seed_same_scenes_other_seed_other_scenes() -> None:
    items, labels = blob_items()
    first = S.compose_scenes(items, labels, 20, 40, seed=3)
    torch.manual_seed(123)  # the global generators play no part
    np.random.seed(123)
    again = S.compose_scenes(items, labels, 20, 40, seed=3)
    other = S.compose_scenes(items, labels, 20, 40, seed=4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_labels_only_where_items_are() -> None:
    items, labels = blob_items()
    images, seg = S.compose_scenes(items, labels, 60, 48, seed=1)
    assert_labels_follow_pixels(images, seg)


def test_solid_items_labelled_exactly_where_drawn() -> None:
    """Two solid squares of known classes and shades: each visible pixel carries the class of
    the item it shows, so the label follows whichever square is on top."""
    items = torch.from_numpy(np.stack([solid(100), solid(200)]))
    classes = torch.tensor([2, 7])
    images, seg = S.compose_scenes(items, classes, 50, 64, seed=0, per_scene=(2, 2))
    img = images[:, 0]
    assert set(img.unique().tolist()) <= {0, 100, 200}
    assert (seg[img == 0] == 0).all()
    assert (seg[img == 100] == 3).all() and (seg[img == 200] == 8).all()


def test_later_items_occlude_earlier_ones() -> None:
    a, b = solid(100), solid(200)
    img, seg = render([a, b], [2, 7], top=[0, 10], left=[0, 10])
    assert (img[10:38, 10:38] == 200).all() and (seg[10:38, 10:38] == 8).all()
    assert img[5, 5] == 100 and seg[5, 5] == 3
    assert (seg > 0).sum() == 28 * 28 + 28 * 28 - 18 * 18
    img, seg = render([b, a], [7, 2], top=[10, 0], left=[10, 0])  # the other order
    assert (img[:28, :28] == 100).all() and (seg[:28, :28] == 3).all()
    assert img[30, 30] == 200 and seg[30, 30] == 8


def test_holes_are_filled_open_gaps_are_not() -> None:
    masks = S.item_masks(np.stack([ring(), cup()]))
    assert masks[0].all()  # the ring's inside is a hole: the item is there
    assert not masks[1][4:-4, 4:-4].any()  # the cup's inside is open to the outside
    assert masks[1].sum() == (np.asarray(cup()) > THR).sum()


def test_earlier_content_shows_through_open_gaps_of_later_items() -> None:
    img, seg = render([solid(100), cup()], [0, 5], top=[4, 4], left=[4, 4])
    assert (img[12:28, 12:28] == 100).all() and (seg[12:28, 12:28] == 1).all()
    assert (img[4:8, 8:28] == 100).all() and (seg[4:8, 8:28] == 1).all()  # the open top
    assert (img[4:32, 4:8] == 200).all() and (seg[4:32, 4:8] == 6).all()  # the cup's side
    img, seg = render([solid(100), ring()], [0, 5], top=[4, 4], left=[4, 4])
    assert (img[12:28, 12:28] == 0).all() and (seg[4:32, 4:32] == 6).all()  # hole covers


def test_items_rescaled_and_inside_the_canvas() -> None:
    items = torch.from_numpy(solid(255)[None])
    images, seg = S.compose_scenes(items, torch.tensor([9]), 200, 50, seed=0, per_scene=(1, 1))
    sides = []
    for scene in seg:
        rows, cols = torch.nonzero(scene, as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert h == w and len(rows) == h * w  # a whole square, not cut by the border
        sides.append(h)
    assert min(sides) <= 23 and max(sides) >= 40  # scales spread over 0.75..1.5 of 28 px
    assert set(seg.unique().tolist()) == {0, 10}


def test_per_scene_counts() -> None:
    shades = torch.from_numpy(np.stack([solid(20 + 50 * i, 8) for i in range(5)]))
    images, _ = S.compose_scenes(shades, torch.arange(5), 100, 64, seed=2, per_scene=(1, 3))
    counts = [len(set(scene.unique().tolist()) - {0}) for scene in images]
    assert min(counts) == 1 and max(counts) == 3  # small items rarely hide each other


def test_bad_arguments_are_errors() -> None:
    items, labels = blob_items(5)
    with pytest.raises(ValueError, match="uint8"):
        S.compose_scenes(items.float(), labels, 2, 32, seed=0)
    with pytest.raises(ValueError, match="0..9"):
        S.compose_scenes(items, labels + 10, 2, 32, seed=0)
    with pytest.raises(ValueError, match="per_scene"):
        S.compose_scenes(items, labels, 2, 32, seed=0, per_scene=(3, 2))


# ----------------------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items, labels = blob_items()
    first = S.cached_scenes(items, labels, 12, 32, seed=5, split="test", cache_dir=tmp_path)
    path = tmp_path / "fashion-scenes-test-12-32-5-v1.npz"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert torch.equal(first[0], S.compose_scenes(items, labels, 12, 32, seed=5)[0])

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated instead of read from the cache")

    monkeypatch.setattr(S, "compose_scenes", fail)
    again = S.cached_scenes(items, labels, 12, 32, seed=5, split="test", cache_dir=tmp_path)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert again[1].dtype == torch.int64 and again[0].dtype == torch.uint8
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"images", "labels"}


def test_damaged_cache_is_generated_anew(tmp_path: Path) -> None:
    items, labels = blob_items()
    path = tmp_path / "fashion-scenes-train-4-32-0-v1.npz"
    path.write_bytes(b"not a zip file")
    images, seg = S.cached_scenes(items, labels, 4, 32, seed=0, split="train", cache_dir=tmp_path)
    assert images.shape == (4, 1, 32, 32)
    with np.load(path, allow_pickle=False) as data:
        assert np.array_equal(data["labels"], seg.numpy())


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def fashion_test_items(tmp_path_factory: pytest.TempPathFactory
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's raw test images (uint8 N x 28 x 28) and their labels."""
    if not D.DEBIAN_FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"{D.DEBIAN_FASHION_MNIST_DIR} absent: apt-get install "
                    "dataset-fashion-mnist to run this")
    root = tmp_path_factory.mktemp("fashion-root")
    raw = D._load_fashion_mnist(D._LoadOptions(root, False, 0, 0, None))
    # _RawData holds k / 255 as float32: multiplying back and rounding gives k exactly
    items = (raw.test_images[:, 0] * 255).round().to(torch.uint8)
    return items, raw.test_labels


def test_real_fashion_mnist_scenes(fashion_test_items: tuple[torch.Tensor, torch.Tensor]
                                   ) -> None:
    items, labels = fashion_test_items
    assert items.shape == (10000, 28, 28) and int(items.max()) == 255
    images, seg = S.compose_scenes(items, labels, 200, 64, seed=0)
    assert set(seg.unique().tolist()) == set(range(11))
    background = (seg == 0).float().mean().item()
    print(f"background: {background:.3f} of the pixels")
    assert 0.4 < background < 0.9
    assert_labels_follow_pixels(images, seg)
    # filled holes are a small part of the items
    assert ((seg > 0) & (images[:, 0] <= THR)).sum() < 0.1 * (seg > 0).sum()


@pytest.mark.bench
def test_12000_scenes_are_fast() -> None:
    items, labels = blob_items(1000)
    start = time.perf_counter()
    S.compose_scenes(items, labels, 12000, 64, seed=0)
    assert time.perf_counter() - start < 20
