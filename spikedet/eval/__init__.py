"""Scoring: COCO mAP through pycocotools and PASCAL VOC AP the devkit's way, from one detections format."""
from .coco_map import COCO_METRICS, evaluate_coco
from .detections import Detections, load_detections
from .voc_map import evaluate_voc, evaluate_voc_records

__all__ = [
    "COCO_METRICS", "Detections", "evaluate_coco", "evaluate_voc", "evaluate_voc_records",
    "load_detections",
]
