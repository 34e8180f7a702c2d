"""Training images for distillation: folders, dataset YAMLs or image lists, a held-out selection set, and the
augmented views (albumentations)."""
import functools
import random
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import albumentations as A
import cv2
import numpy as np
import torch

from ..data.yolo import read_yolo
from ..defaults import CHOICES
from ..errors import SpikedetError, fail
from ..inference import image_files, is_image_file, load_image, preprocess

AUGMENTS = CHOICES["distill_augment"]


def training_images(images: Union[str, Path, Sequence[Union[str, Path]]]) -> List[Path]:
    """The image files of one or several sources, sorted and without repeats. A source is a folder of images,
    an ultralytics dataset YAML (its train split, labels ignored) or a text file listing one image path per
    line (relative paths are relative to the text file)."""
    sources = [images] if isinstance(images, (str, Path)) else list(images)
    if not sources:
        raise SpikedetError("no training image source given")
    paths = set()
    for source in map(Path, sources):
        found = _source_images(source)
        if not found:
            raise fail(source, "no training images found")
        paths.update(p.resolve() for p in found)
    return sorted(paths)


def _source_images(source: Path) -> List[Path]:
    if source.suffix in (".yaml", ".yml"):
        if not source.is_file():
            raise fail(source, "dataset YAML not found")
        return [Path(r.path) for r in read_yolo(source, "train")]
    if source.suffix == ".txt" and source.is_file():
        return _listed_images(source)
    if source.is_dir():
        return image_files(source)
    if not source.exists():
        raise fail(source, "image folder not found")
    raise fail(source, "training images must be a folder of images, a dataset YAML or a .txt list of images")


def _listed_images(listing: Path) -> List[Path]:
    """The images a text file names, one per line (blank lines and # comments skipped)."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise fail(listing, "is not a text file listing images") from None
    paths = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line) if Path(line).is_absolute() else listing.parent / line
        if not path.is_file():
            raise fail(listing, f"line {number}: {line}: image not found")
        if not is_image_file(path):
            raise fail(listing, f"line {number}: {line}: not an image file")
        paths.append(path)
    return paths


def split_selection(paths: Sequence[Path], count: int, seed: int,
                    pool: Optional[Sequence[Path]] = None) -> Tuple[List[Path], List[Path]]:
    """(training images, selection images): `count` images drawn by `seed` and held out of training, so that
    recipes, run lengths and the shipped file are chosen on images the run never saw (not on an evaluation
    set). pool: draw them only from these of the paths (one source's images), so that the held-out images can
    be of the evaluation set's kind (COCO-like images for COCO's bars) while training keeps every source. The
    draw depends only on the sorted pool and the seed."""
    paths = list(paths)
    candidates = paths if pool is None else sorted(set(pool))
    if not set(candidates) <= set(paths):
        raise SpikedetError("the selection pool must be among the training images")
    if count < 0 or count >= len(candidates):
        raise SpikedetError(f"selection={count}: expected 0 <= selection < the {len(candidates)} images it is "
                            "drawn from")
    held = {candidates[i] for i in random.Random(f"selection-{seed}").sample(range(len(candidates)), count)}
    return [p for p in paths if p not in held], [p for p in paths if p in held]


def selection_images_of(path) -> List[Path]:
    """The selection images a distilled checkpoint (or a run's NAME.last.pt state) names, checked to be on this
    machine; a one-line error naming the file otherwise."""
    from ..fileio import load_torch_file

    content = load_torch_file(path)
    record = content.get("distill") or content.get("settings") or {}  # a checkpoint, or a run's state
    named = record.get("selection_images")
    if not isinstance(named, list) or not named or not all(isinstance(p, str) for p in named):
        raise fail(path, "names no selection images (distill with selection=N)")
    paths = [Path(p) for p in named]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise fail(path, f"{len(missing)} of its selection images are not on this machine, e.g. {missing[0]}")
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
