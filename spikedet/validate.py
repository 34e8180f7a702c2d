"""Scoring a network on a dataset: the ANN once, the SNN at every requested T from one simulation each batch.

Ground truth is a COCO instances file (COCO metrics through pycocotools) or a VOC tree (devkit AP). The
network's classes are matched to the ground truth's by name, so a network trained on the embedded shapes
scores against either of its layouts.
"""
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from .data.coco import read_coco
from .data.records import COCO_TO_VOC_NAMES, VOC_CLASSES, ImageRecord
from .data.voc import read_voc
from .engine import DEFAULT_CHUNK, SpikingNetwork
from .errors import SpikedetError
from .fileio import read_json
from .eval import evaluate_coco, evaluate_voc_records
from .predict import (class_names, default_batch, default_eval_iou, default_resize, load_image, postprocess,
                      preprocess, run_network)


def ground_truth(gt_coco=None, gt_voc=None, split: str = "test", images_dir=None,
                 voc_class_names: Sequence[str] = VOC_CLASSES) -> Tuple[List[ImageRecord], List[str]]:
    """Records and class names from exactly one of a COCO instances file or a VOC tree."""
    if (gt_coco is None) == (gt_voc is None):
        raise SpikedetError("give exactly one ground truth: a COCO instances file or a VOC tree")
    if gt_coco is not None:
        return read_coco(gt_coco, images_dir)
    return read_voc(gt_voc, split, voc_class_names, check_images=True), list(voc_class_names)


def label_map(network_names: Dict[int, str], gt_names: Sequence[str], source) -> Dict[int, int]:
    """Network class index -> 0-based ground-truth class index, by name (COCO names also under their VOC
    spelling); classes the ground truth lacks are left out; an error if nothing matches."""
    index = {name: i for i, name in enumerate(gt_names)}
    index.update({coco: index[voc] for coco, voc in COCO_TO_VOC_NAMES.items() if voc in index and coco not in index})
    mapping = {k: index[name] for k, name in network_names.items() if name in index}
    if not mapping:
        raise SpikedetError(f"{source}: none of the network's classes ({', '.join(network_names.values())}) "
                            f"is in the ground truth's ({', '.join(gt_names)})")
    return mapping


@torch.no_grad()
def detect_records(network, records: List[ImageRecord], imgsz: int, timesteps: Optional[Sequence[int]] = None,
                   batch_size: Optional[int] = None, resize: Optional[str] = None, conf: float = 0.001,
                   iou: Optional[float] = None, chunk: int = DEFAULT_CHUNK, device: str = "cpu",
                   progress: bool = True) -> Dict[Optional[int], list]:
    """Run the network over the records' images: {None or T: per image, a list of Detection}."""
    from ultralytics.utils import TQDM

    network = network.to(device)
    batch_size = batch_size or default_batch(device)
    resize = resize or default_resize(network)
    iou = iou or default_eval_iou(network)
    outputs: Dict[Optional[int], list] = {}
    starts = range(0, len(records), batch_size)
    for start in TQDM(starts, desc="detecting", disable=not progress, total=len(starts)):
        batch = records[start:start + batch_size]
        images = [load_image(r.path) for r in batch]
        tensor = torch.stack([preprocess(im, imgsz, resize) for im in images]).to(device)
        for key, raw in run_network(network, tensor, timesteps, chunk).items():
            outputs.setdefault(key, []).extend(
                postprocess(raw.cpu(), imgsz, [im.shape for im in images], resize, conf, iou))
    return outputs


def to_results(records: List[ImageRecord], detections: list, labels: Dict[int, int], voc: bool,
               category_ids: Optional[List[int]] = None) -> List[dict]:
    """Detections -> COCO results format. VOC boxes move to the devkit's 1-based inclusive pixels."""
    results = []
    for record, dets in zip(records, detections):
        for d in dets:
            if d.label not in labels:
                continue
            x0, y0, x1, y1 = (float(v) for v in d.box)
            if voc:  # a box over pixels [x0, x1) is the devkit box (x0 + 1) .. x1, inclusive
                x0, y0 = x0 + 1, y0 + 1
            gt_label = labels[d.label]
            category = gt_label + 1 if category_ids is None else category_ids[gt_label]
            results.append({"image_id": record.image_id, "category_id": category,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": d.score})
    return results


def evaluate_network(network, imgsz: int, gt_coco=None, gt_voc=None, split: str = "test", images_dir=None,
                     timesteps: Optional[Sequence[int]] = None, voc_class_names: Sequence[str] = VOC_CLASSES,
                     max_images: Optional[int] = None, **detect_args) -> Dict[str, dict]:
    """{"ann": metrics} for an ANN, {"snn": {T: metrics}} for an SNN, metrics as in spikedet.eval, and
    {"seconds_per_image": {"ann" or "snn": wall time}} (for an SNN, the simulation to the largest T).

    max_images: score only the first N images (COCO: by image id; VOC: in the split's order).
    """
    records, gt_names = ground_truth(gt_coco, gt_voc, split, images_dir, voc_class_names)
    if max_images is not None:
        records = (sorted(records, key=lambda r: r.image_id) if gt_coco else records)[:max_images]
    labels = label_map(class_names(network), gt_names, gt_coco or gt_voc)
    started = time.perf_counter()
    outputs = detect_records(network, records, imgsz, timesteps, **detect_args)
    seconds = (time.perf_counter() - started) / len(records)
    category_ids = _coco_category_ids(gt_coco) if gt_coco else None
    image_ids = [r.image_id for r in records] if max_images is not None else None
    scored = {}
    for key, detections in outputs.items():
        results = to_results(records, detections, labels, voc=gt_voc is not None, category_ids=category_ids)
        scored[key] = ({"coco": evaluate_coco(gt_coco, results, image_ids=image_ids)} if gt_coco else
                       evaluate_voc_records(records, results, gt_names))
    if isinstance(network, SpikingNetwork):
        return {"snn": {str(t): scored[t] for t in sorted(scored)}, "seconds_per_image": {"snn": seconds}}
    return {"ann": scored[None], "seconds_per_image": {"ann": seconds}}


def evaluate_networks(networks: Sequence, imgsz: int, **evaluate_args) -> Dict[str, dict]:
    """evaluate_network for each network (an SNN's source ANN, then the SNN), merged into one result:
    {"ann": ..., "snn": ..., "seconds_per_image": {"ann": ..., "snn": ...}}."""
    merged = {"seconds_per_image": {}}
    for network in networks:
        scored = evaluate_network(network, imgsz, **evaluate_args)
        merged["seconds_per_image"].update(scored.pop("seconds_per_image"))
        merged.update(scored)
    return merged


def _coco_category_ids(instances_json: Union[str, Path]) -> List[int]:
    """The COCO category ids in the order read_coco numbers its classes (sorted by id)."""
    return sorted(c["id"] for c in read_json(instances_json, "COCO annotation file")["categories"])
