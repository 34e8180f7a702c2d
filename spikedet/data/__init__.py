"""Datasets: the embedded synthetic shapes set, readers for VOC / COCO / YOLO layouts, converters."""
from .coco import coco_to_yolo, read_coco
from .records import VOC_CLASSES, ImageRecord, load_class_names
from .shapes import SHAPES_CLASSES, make_shapes_dataset
from .voc import read_voc, voc_to_yolo
from .yolo import read_yolo

__all__ = [
    "VOC_CLASSES", "ImageRecord", "load_class_names",
    "SHAPES_CLASSES", "make_shapes_dataset",
    "read_voc", "read_coco", "read_yolo", "voc_to_yolo", "coco_to_yolo",
]
