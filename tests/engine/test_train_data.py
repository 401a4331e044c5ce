import numpy as np
import torch
from PIL import Image

from ldmdetect import methods
from ldmdetect.config import DetectorConfig
from ldmdetect.engine.reconstruct import AlignedPair, read_aligned_dataset
from ldmdetect.engine.train_config import AugmentConfig
from ldmdetect.engine.train_data import PairDataset, split_by_source
from ldmdetect.io.images import save_png


def test_split_keeps_every_source_on_one_side(aligned_dir):
    pairs = read_aligned_dataset(aligned_dir)
    train, val = split_by_source(pairs, 0.34, seed=0)
    assert train and val and len(train) + len(val) == len(pairs)
    assert not {p.source for p in train} & {p.source for p in val}
    assert split_by_source(pairs, 0.34, seed=0) == (train, val)


def _pair_dataset(tmp_path, image, size, aug, seed=0):
    save_png(image, tmp_path / "real.png")
    save_png(image, tmp_path / "fake.png")
    pair = AlignedPair("p", "s", tmp_path / "real.png", (("", tmp_path / "fake.png"),))
    prepare = methods.get("ae").prepare(DetectorConfig(input_size=size), train=True, augment=aug)
    return PairDataset([pair], prepare, seed)


def test_a_family_head_labels_each_reconstruction_by_its_family(tmp_path):
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8))
    for name in ("real", "a", "b"):
        save_png(image, tmp_path / f"{name}.png")
    pair = AlignedPair(
        "p", "s", tmp_path / "real.png", (("b", tmp_path / "b.png"), ("a", tmp_path / "a.png"))
    )
    always = AugmentConfig(flip=1, jpeg_prob=1, resize_prob=0, blur_prob=0)
    prepare = methods.get("ae").prepare(DetectorConfig(input_size=48), train=True, augment=always)
    items = PairDataset([pair], prepare, 0, families=("a", "b"))[0]
    assert [y for _, y in items] == [0, 2, 1]  # real 0, then 1 + the family's index
    assert all(torch.equal(items[0][0]["crops"], s["crops"]) for s, _ in items)  # augmented alike
    assert [y for _, y in PairDataset([pair], prepare, 0)[0]] == [0, 1, 1]  # binary


def test_pair_augmentation_is_identical_for_both_members(tmp_path):
    rng_image = np.random.default_rng(0).integers(0, 256, (80, 90, 3), dtype=np.uint8)
    image = Image.fromarray(rng_image)
    always = AugmentConfig(flip=1, jpeg_prob=1, resize_prob=1, blur_prob=1)
    for seed in range(5):
        (real, y0), (fake, y1) = _pair_dataset(tmp_path, image, 48, always, seed)[0]
        assert (y0, y1) == (0, 1)
        assert real["crops"].shape == (1, 3, 48, 48) and real["crops"].dtype == torch.uint8
        assert torch.equal(real["crops"], fake["crops"])


def test_pair_augmentation_changes_pixels_and_is_seeded(tmp_path):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8))
    always = AugmentConfig(flip=1, jpeg_prob=1, resize_prob=0, blur_prob=0)
    a = _pair_dataset(tmp_path, image, 64, always, 3)[0][0][0]["crops"]
    b = _pair_dataset(tmp_path, image, 64, always, 3)[0][0][0]["crops"]
    assert torch.equal(a, b)
    plain = _pair_dataset(tmp_path, image, 64, None, 3)[0][0][0]["crops"]
    assert not torch.equal(a, plain)
