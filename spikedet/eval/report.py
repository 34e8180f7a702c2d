"""Plain-text tables of evaluation results, for the terminal."""
from typing import Dict, Optional

# What each COCO metric averages over, in COCOeval.summarize()'s words.
COCO_METRIC_SCOPES = {
    "AP": "IoU=0.50:0.95  area=all     maxDets=100",
    "AP50": "IoU=0.50       area=all     maxDets=100",
    "AP75": "IoU=0.75       area=all     maxDets=100",
    "APs": "IoU=0.50:0.95  area=small   maxDets=100",
    "APm": "IoU=0.50:0.95  area=medium  maxDets=100",
    "APl": "IoU=0.50:0.95  area=large   maxDets=100",
    "AR1": "IoU=0.50:0.95  area=all     maxDets=1",
    "AR10": "IoU=0.50:0.95  area=all     maxDets=10",
    "AR100": "IoU=0.50:0.95  area=all     maxDets=100",
    "ARs": "IoU=0.50:0.95  area=small   maxDets=100",
    "ARm": "IoU=0.50:0.95  area=medium  maxDets=100",
    "ARl": "IoU=0.50:0.95  area=large   maxDets=100",
}


def _value(value: Optional[float]) -> str:
    """Three decimals; '-' where there was nothing to measure."""
    return "-" if value is None else f"{value:.3f}"


def format_coco_table(metrics: Dict[str, Optional[float]]) -> str:
    lines = ["COCO bbox"]
    lines += [f"  {name:<6} {_value(value):>6}   {COCO_METRIC_SCOPES[name]}"
              for name, value in metrics.items()]
    return "\n".join(lines)


def format_voc_table(results: dict) -> str:
    """Per-class AP side by side in both VOC metrics, then the means."""
    voc07, voc10 = results["voc07"], results["voc10"]
    width = max(len(name) for name in ["class", *voc07["per_class"]])
    header = f"{'class':<{width}}  {'voc07':>6}  {'voc10':>6}"
    lines = ["PASCAL VOC AP at IoU 0.5 (voc07: 11-point, voc10: area under the curve)", header]
    lines += [f"{name:<{width}}  {_value(ap):>6}  {_value(voc10['per_class'][name]):>6}"
              for name, ap in voc07["per_class"].items()]
    lines.append("-" * len(header))
    lines.append(f"{'mAP':<{width}}  {_value(voc07['mAP']):>6}  {_value(voc10['mAP']):>6}")
    return "\n".join(lines)
