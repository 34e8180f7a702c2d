"""Training images for distillation: a folder or a dataset YAML's train split, augmented with albumentations."""
import random
from pathlib import Path
from typing import List, Sequence, Union

import albumentations as A
import cv2
import numpy as np
import torch

from ..data.yolo import read_yolo
from ..errors import fail
from ..inference import image_files, load_image, preprocess


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
    """Augmented training images: random resized crop to imgsz x imgsz (stretched, as darknet's eval resizes),
    horizontal flip and light colour jitter (albumentations); RGB float in [0, 1]. The random state is
    derived from (seed, epoch, index), so a run is reproducible whatever the number of workers."""

    def __init__(self, paths: Sequence[Path], imgsz: int, seed: int = 0, augment: bool = True):

        self.paths, self.imgsz, self.seed, self.epoch = list(paths), int(imgsz), int(seed), 0
        self.augment = augment
        self.transform = A.Compose([
            A.RandomResizedCrop(size=(imgsz, imgsz), scale=(0.4, 1.0), ratio=(0.6, 1.66), p=1.0),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.015, p=0.5),
        ])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:

        image = load_image(self.paths[index])  # BGR
        if not self.augment:
            return preprocess(image, self.imgsz, "stretch")
        seed = (self.seed * 1_000_003 + self.epoch * 10_007 + index) % 2 ** 31
        random.seed(seed)
        np.random.seed(seed)
        self.transform.set_random_seed(seed) if hasattr(self.transform, "set_random_seed") else None
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        out = self.transform(image=rgb)["image"]
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).float() / 255.0


def load_batch(paths: Sequence[Path], imgsz: int) -> torch.Tensor:
    """Images stretched to imgsz, as darknet evaluates (the calibration input)."""
    return torch.stack([preprocess(load_image(p), imgsz, "stretch") for p in paths])
