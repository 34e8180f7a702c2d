"""Training images for distillation: a folder or a dataset YAML's train split, augmented with albumentations."""
import functools
import random
from pathlib import Path
from typing import List, Sequence, Union

import albumentations as A
import cv2
import numpy as np
import torch

from ..data.yolo import read_yolo
from ..defaults import CHOICES
from ..errors import SpikedetError, fail
from ..inference import image_files, load_image, preprocess

AUGMENTS = CHOICES["distill_augment"]


def training_images(images: Union[str, Path]) -> List[Path]:
    """The image files of a folder (sorted), or of an ultralytics dataset YAML's train split (labels ignored)."""
    source = Path(images)
    if source.suffix in (".yaml", ".yml"):
        if not source.is_file():
            raise fail(source, "dataset YAML not found")
        paths = sorted(Path(r.path) for r in read_yolo(source, "train"))
    elif source.is_dir():
        paths = image_files(source)
    elif not source.exists():
        raise fail(source, "image folder not found")
    else:
        raise fail(source, "training images must be a folder of images or a dataset YAML")
    if not paths:
        raise fail(source, "no training images found")
    return paths


class DistillImages(torch.utils.data.Dataset):
    """Augmented training images, RGB float in [0, 1], imgsz x imgsz (stretched, as darknet's eval resizes).

    augment="crop": a random resized crop of the image, horizontal flip, light colour jitter (albumentations).
    augment="mosaic_mixup": the same view, but half of the samples are a mosaic of four views (a random split
    point, one view of this and of three random other images per quarter) and 30% are blended with a view of
    another image (ratio 0.35-0.65). Without labels any input is a valid one: the teacher labels it, and the
    wider the inputs, the less the student learns the few training images instead of the teacher's function
    ("function matching": distillation on a small set stays consistent with the teacher when teacher and
    student see the same strongly augmented view). The random state is derived from (seed, epoch, index), so
    a run is reproducible whatever the number of workers."""

    MOSAIC, MIXUP, MIX_RATIO = 0.5, 0.3, (0.35, 0.65)

    def __init__(self, paths: Sequence[Path], imgsz: int, seed: int = 0, augment: str = AUGMENTS[0]):
        if augment not in AUGMENTS:
            raise SpikedetError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        self.paths, self.imgsz, self.seed, self.epoch = list(paths), int(imgsz), int(seed), 0
        self.augment = augment

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        seed = (self.seed * 1_000_003 + self.epoch * 10_007 + index) % 2 ** 31
        rng = np.random.default_rng(seed)
        random.seed(seed)
        np.random.seed(seed)
        size = self.imgsz
        if self.augment == "mosaic_mixup" and rng.random() < self.MOSAIC:
            image = self._mosaic(index, rng)
        else:
            image = self._view(index, size, size, rng)
        if self.augment == "mosaic_mixup" and rng.random() < self.MIXUP:
            ratio = rng.uniform(*self.MIX_RATIO)
            other = self._view(int(rng.integers(len(self.paths))), size, size, rng)
            image = ratio * image + (1 - ratio) * other
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0

    @classmethod
    def describe(cls, augment: str) -> str:
        """The views of `augment` in words, for a checkpoint's record."""
        mixed = f"; mosaic of 4 (p {cls.MOSAIC}), mixup (p {cls.MIXUP}, ratio {cls.MIX_RATIO})"
        return VIEW + (mixed if augment == "mosaic_mixup" else "")

    def _view(self, index: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """One augmented view of image `index` at height x width (float32 RGB, 0-255)."""
        transform = _view_transform(height, width)
        transform.set_random_seed(int(rng.integers(2 ** 31)))
        rgb = cv2.cvtColor(load_image(self.paths[index]), cv2.COLOR_BGR2RGB)
        return transform(image=rgb)["image"].astype(np.float32)

    def _mosaic(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Four views in the four quarters around a random split point; this image in the first."""
        size = self.imgsz
        cy, cx = (int(round(v * size)) for v in rng.uniform(0.25, 0.75, size=2))
        sources = [index] + [int(i) for i in rng.integers(len(self.paths), size=3)]
        out = np.empty((size, size, 3), np.float32)
        quarters = ((0, cy, 0, cx), (0, cy, cx, size), (cy, size, 0, cx), (cy, size, cx, size))
        for source, (y0, y1, x0, x1) in zip(sources, quarters):
            out[y0:y1, x0:x1] = self._view(source, y1 - y0, x1 - x0, rng)
        return out


VIEW = "RandomResizedCrop(scale 0.4-1, ratio 0.6-1.66) + HorizontalFlip + ColorJitter, stretch"


@functools.lru_cache(maxsize=None)
def _view_transform(height: int, width: int) -> A.Compose:
    """The view (VIEW) at one output size, built once per size and reseeded before every use."""
    return A.Compose([
        A.RandomResizedCrop(size=(height, width), scale=(0.4, 1.0), ratio=(0.6, 1.66), p=1.0),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.015, p=0.5),
    ])


def load_batch(paths: Sequence[Path], imgsz: int) -> torch.Tensor:
    """Images stretched to imgsz, as darknet evaluates (the calibration input)."""
    return torch.stack([preprocess(load_image(p), imgsz, "stretch") for p in paths])
