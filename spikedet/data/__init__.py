"""Datasets: the embedded synthetic shapes set, readers for VOC / COCO / YOLO layouts, converters."""
from .records import VOC_CLASSES, ImageRecord, load_class_names

__all__ = ["VOC_CLASSES", "ImageRecord", "load_class_names"]
