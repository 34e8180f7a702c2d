"""Scoring a network on a dataset: the ANN once, the SNN at every requested T from one simulation per batch.

Ground truth is a COCO instances file (COCO metrics through pycocotools) or a VOC tree (devkit AP), read
once for a whole sweep. The network's classes are matched to the ground truth's by name, so a network
trained on the embedded shapes scores against either of its layouts, and a COCO network on VOC.
"""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .data.coco import read_coco
from .data.records import COCO_TO_VOC_NAMES, VOC_CLASSES, ImageRecord
from .data.voc import read_voc
from .distributed import is_main, shard, unshard
from .errors import SpikedetError, fail
from .eval import evaluate_coco, evaluate_voc_records
from .eval.coco_map import load_coco_gt
from .inference import Detection, StreamSettings, load_image, stream
from .interrupts import STOPS, interrupted
from .networks import class_names, is_snn
from .progress import progress_bar


@dataclass
class GroundTruth:
    """Images with their objects, the class names, and for COCO the pycocotools index (read once)."""

    records: List[ImageRecord]
    names: List[str]
    source: str
    coco: object = None  # pycocotools COCO, for COCO ground truth

    @classmethod
    def read(cls, gt_coco=None, gt_voc=None, split: str = "test", images_dir=None,
             voc_class_names: Sequence[str] = VOC_CLASSES, max_images: Optional[int] = None,
             only_images: Optional[Sequence] = None) -> "GroundTruth":
        """Exactly one of a COCO instances file or a VOC tree; max_images keeps the first N images (COCO: by
        image id; VOC: in the split's order). only_images: keep just these image files (e.g. a run's held-out
        labelled training images); every one must be in the ground truth, or the score would silently be on
        fewer images."""
        if (gt_coco is None) == (gt_voc is None):
            raise SpikedetError("give exactly one ground truth: a COCO instances file or a VOC tree")
        if gt_coco is not None:
            records, names = read_coco(gt_coco, images_dir)
            records.sort(key=lambda r: r.image_id)
            truth = cls(records, names, str(gt_coco), load_coco_gt(gt_coco))
        else:
            records = read_voc(gt_voc, split, voc_class_names, check_images=True)
            truth = cls(records, list(voc_class_names), str(gt_voc))
        if only_images is not None:
            truth.records = truth.only(only_images)
        if max_images is not None:
            truth.records = truth.records[:max_images]
        return truth

    def only(self, paths: Sequence) -> List[ImageRecord]:
        """The records of `paths` (compared as resolved files), or a one-line error naming what is missing."""
        wanted = {Path(p).resolve() for p in paths}
        if not wanted:
            raise SpikedetError("no images to score were named")
        kept = [r for r in self.records if Path(r.path).resolve() in wanted]
        missing = sorted(wanted - {Path(r.path).resolve() for r in kept})
        if missing:
            raise fail(self.source, f"{len(missing)} of the {len(wanted)} images to score are not in it, e.g. "
                                    f"{missing[0]}")
        return kept

    @classmethod
    def image_ids_of(cls, gt_coco, paths: Sequence) -> List:
        """The COCO image ids of these image files in the instances file `gt_coco` (each must be in it), e.g. a
        run's held-out images, for drawing only those (spikedet.eval.bootstrap)."""
        return [r.image_id for r in cls.read(gt_coco, only_images=paths).records]

    def label_map(self, network_names: Dict[int, str]) -> Dict[int, int]:
        """Network class index -> 0-based ground-truth class index, by name (COCO names also under their VOC
        spelling); classes the ground truth lacks are left out; an error if nothing matches."""
        index = {name: i for i, name in enumerate(self.names)}
        index.update({coco: index[voc] for coco, voc in COCO_TO_VOC_NAMES.items()
                      if voc in index and coco not in index})
        mapping = {k: index[name] for k, name in network_names.items() if name in index}
        if not mapping:
            raise fail(self.source, f"none of the network's classes ({', '.join(network_names.values())}) "
                                    f"is in the ground truth's ({', '.join(self.names)})")
        return mapping

    def check_classes(self, network_names: Dict[int, str], allow_partial: bool = False):
        """Scores count only the classes both sides have: when some of the network's are not in the ground
        truth, one line names them, unless the user accepts it (allow_partial, --allow-partial)."""
        labels = self.label_map(network_names)
        missing = [name for k, name in network_names.items() if k not in labels]
        if missing and not allow_partial:
            shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
            raise fail(self.source, f"{len(missing)} of the network's {len(network_names)} classes are not in "
                                    f"the ground truth ({shown}): the scores would count only the others; "
                                    "add --allow-partial (allow_partial=True) to score them anyway")

    def results(self, detections: List[List[Detection]], labels: Dict[int, int]) -> List[dict]:
        """Per-image detections -> COCO results format. VOC boxes move to the devkit's 1-based inclusive
        pixels (a box over pixels [x0, x1) is the devkit box (x0 + 1) .. x1)."""
        category_ids = sorted(self.coco.getCatIds()) if self.coco is not None else None
        out = []
        for record, dets in zip(self.records, detections):
            for d in dets:
                if d.label not in labels:
                    continue
                x0, y0, x1, y1 = (float(v) for v in d.box)
                if self.coco is None:
                    x0, y0 = x0 + 1, y0 + 1
                gt_label = labels[d.label]
                category = gt_label + 1 if category_ids is None else category_ids[gt_label]
                out.append({"image_id": record.image_id, "category_id": category,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": d.score})
        return out

    def score(self, results: List[dict]) -> dict:
        if self.coco is not None:
            return {"coco": evaluate_coco(self.coco, results, image_ids=[r.image_id for r in self.records])}
        return evaluate_voc_records(self.records, results, self.names)


def detect_records(network, truth: GroundTruth, settings: StreamSettings,
                   progress: bool = True) -> Optional[Dict[Optional[int], List[List[Detection]]]]:
    """Run the network over the ground truth's images: {None or T: per image, its detections}. Under
    torchrun each process runs its shard and rank 0 gets them all (other ranks: None)."""
    records = shard(truth.records)
    frames = ((r.image_id, load_image(r.path)) for r in records)
    outputs: Dict[Optional[int], list] = {}
    bar = progress_bar(total=len(records), desc="detecting", disable=not (progress and is_main()))
    try:
        for keys, _, batch in stream(network, frames, settings):
            for key, dets in batch.items():
                outputs.setdefault(key, []).extend(dets)
            bar.update(len(keys))
    except STOPS as e:
        raise interrupted(e, f"after {bar.n} images; kept nothing (scores are written when every image is "
                             "done)") from None
    finally:
        bar.close()
    merged = unshard([{key: dets[i] for key, dets in outputs.items()} for i in range(len(records))],
                     len(truth.records))
    return None if merged is None else {key: [image[key] for image in merged] for key in outputs}


def evaluate_network(network, truth: GroundTruth, settings: StreamSettings, progress: bool = True,
                     keep_detections: bool = False) -> dict:
    """{"ann": metrics} for an ANN or {"snn": {T: metrics}} for an SNN (metrics as in spikedet.eval), with
    {"seconds_per_image": {"ann" or "snn": wall time}} (an SNN's: the simulation to the largest T; under
    torchrun, wall time over all images) and, with keep_detections, the detections scored in the COCO results
    format: {"detections": {"ann": [...]} or {"snn": {T: [...]}}}. None on torchrun ranks other than 0."""
    labels = truth.label_map(class_names(network))
    started = time.perf_counter()
    outputs = detect_records(network.to(settings.device), truth, settings, progress)
    if outputs is None:  # a torchrun process other than rank 0: its detections went to rank 0
        return None
    seconds = (time.perf_counter() - started) / len(truth.records)
    found = {key: truth.results(dets, labels) for key, dets in outputs.items()}
    if is_snn(network):  # one row per T
        row, found = "snn", {t: found[t] for t in sorted(found)}
        scored = {t: truth.score(dets) for t, dets in found.items()}
    else:
        row, found = "ann", found[None]
        scored = truth.score(found)
    out = {row: scored, "seconds_per_image": {row: seconds}}
    if keep_detections:
        out["detections"] = {row: found}
    return out


def evaluate_networks(networks: Sequence, truth: GroundTruth, settings: StreamSettings,
                      progress: bool = True, keep_detections: bool = False) -> dict:
    """evaluate_network for each network (an SNN's source ANN, then the SNN), merged into one result:
    {"ann": ..., "snn": ..., "seconds_per_image": {"ann": ..., "snn": ...}} (and "detections" likewise)."""
    merged = {"seconds_per_image": {}, **({"detections": {}} if keep_detections else {})}
    for network in networks:
        scored = evaluate_network(network, truth, settings, progress, keep_detections)
        if scored is None:  # not rank 0 under torchrun: run the next network's shard too, report nothing
            continue
        merged["seconds_per_image"].update(scored.pop("seconds_per_image"))
        if keep_detections:
            merged["detections"].update(scored.pop("detections"))
        merged.update(scored)
    return merged if is_main() else None
