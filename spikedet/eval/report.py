"""Plain-text tables of evaluation results, for the terminal, and plots of mAP against T."""
import io
from typing import Dict, Optional

from ..errors import SpikedetError
from ..fileio import atomic_write_bytes

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


def headline(metrics: dict) -> Dict[str, Optional[float]]:
    """The two numbers a sweep table shows: COCO AP50 and AP (as mAP50, mAP50_95), or VOC07 and VOC10 mAP."""
    if "coco" in metrics:
        return {"mAP50": metrics["coco"]["AP50"], "mAP50_95": metrics["coco"]["AP"]}
    return {"voc07": metrics["voc07"]["mAP"], "voc10": metrics["voc10"]["mAP"]}


def format_sweep_table(results: dict) -> str:
    """The reference row (the SNN's source ANN, or the network given as reference), then the SNN per T, with
    the SNN / reference ratio of each headline number."""
    ann = headline(results["ann"]) if "ann" in results else None
    label = reference_label(results)
    rows = [(label, ann)] + [(f"SNN T={t}", headline(m)) for t, m in results.get("snn", {}).items()]
    keys = list(rows[0][1] if rows[0][1] else rows[1][1])
    width = max(12, len(label) + 2)
    header = f"{'model':<{width}}" + "".join(f"{k:>10}" for k in keys)
    if ann is not None:
        header += "".join(f"{k + '/' + label:>{max(14, len(k) + len(label) + 3)}}" for k in keys)
    lines = [header, "-" * len(header)]
    for name, values in rows:
        if values is None:
            continue
        line = f"{name:<{width}}" + "".join(f"{_value(values[k]):>10}" for k in keys)
        if ann is not None and name != label:
            line += "".join(f"{_ratio(values[k], ann[k]):>{max(14, len(k) + len(label) + 3)}}" for k in keys)
        lines.append(line)
    return "\n".join(lines)


def reference_label(results: dict) -> str:
    """The reference row's name: 'ANN' for the SNN's own source, 'reference' for a network given to compare."""
    return "reference" if results.get("reference", {}).get("role") == "reference" else "ANN"


def format_reference(results: dict) -> str:
    """One line saying which network and which file the reference row is."""
    ref = results.get("reference")
    if not ref:
        return ""
    if "snn" not in results:
        return (f"scored: {ref['network']} from {ref['file']} alone (no SNN: give --timesteps to convert it in "
                "memory and score its SNN too)")
    what = "the SNN's source, stored in" if ref["role"] == "source" else "given as --reference:"
    return f"{reference_label(results)} row: {ref['network']}, {what} {ref['file']}"


def t_for_share(results: dict, fractions=(0.95, 0.99)) -> dict:
    """For each fraction of the reference row's first headline metric (COCO AP50 or VOC07 mAP): the smallest
    scored T at which the SNN keeps it ("first"), and the smallest scored T from which on every larger scored T
    keeps it as well ("stable_from"); None where no T does. {"metric": ..., "95%": {"first", "stable_from"}}"""
    if "ann" not in results or not results.get("snn"):
        return {}
    key = next(iter(headline(results["ann"])))
    reference = headline(results["ann"])[key]
    sweep = sorted((int(t), headline(m)[key] or 0.0) for t, m in results["snn"].items())
    found = {"metric": key}
    for fraction in fractions:
        kept = [bool(reference) and value >= fraction * reference for _, value in sweep]
        first = next((i for i, ok in enumerate(kept) if ok), None)
        stable = next((i for i in range(len(sweep)) if all(kept[i:])), None)
        found[f"{round(100 * fraction)}%"] = {"first": None if first is None else sweep[first][0],
                                              "stable_from": None if stable is None else sweep[stable][0]}
    return found


def format_t_for_share(found: dict, label: str = "ANN") -> str:
    if not found:
        return ""
    parts = []
    for share, at in found.items():
        if share == "metric":
            continue
        if at["first"] is None:
            parts.append(f">= {share}: at no scored T")
        else:
            stable = (f"from T = {at['stable_from']} on at every larger scored T" if at["stable_from"] is not None
                      else "not at every larger scored T")
            parts.append(f">= {share}: first at T = {at['first']}, {stable}")
    return f"SNN share of the {label} row's {found['metric']}: " + "; ".join(parts)


def format_report(results: dict) -> str:
    """What eval prints: the table, which network the reference row is, the T reaching each share, timing."""
    results.setdefault("t_for_share", t_for_share(results))
    parts = [format_sweep_table(results), format_reference(results),
             format_t_for_share(results["t_for_share"], reference_label(results)), format_timing(results)]
    return "\n".join(p for p in parts if p)


def format_timing(results: dict) -> str:
    timing = results["seconds_per_image"]
    parts = [f"{reference_label(results)} {timing['ann']:.3f} s"] if "ann" in timing else []
    if "snn" in timing:
        parts.append(f"SNN {timing['snn']:.2f} s for {max(int(t) for t in results['snn'])} steps")
    return "wall time per image: " + ", ".join(parts)


def _ratio(value: Optional[float], reference: Optional[float]) -> str:
    return "-" if value is None or not reference else f"{100 * value / reference:.1f}%"


def plot_sweep(results: dict, path, title: str = "mAP vs time steps") -> None:
    """PNG of each headline metric of one sweep against T (log scale), the ANN as a dashed line."""
    curves = [(f"SNN {key}", f"ANN {key}", _metric_series(results, key)) for key in headline(_some_metrics(results))]
    _plot(curves, path, title, ylabel="mAP")


def plot_sweeps(runs: Dict[str, dict], path, metric: str = None, reference: Optional[float] = None,
                title: str = None) -> None:
    """PNG of one headline metric (default: the first) against T for several sweeps ({label: eval results}),
    each run's ANN dashed in its colour; `reference`: a grey line (e.g. the original float network's score)."""
    metric = metric or next(iter(headline(_some_metrics(next(iter(runs.values()))))))
    curves = [(label, f"{label}: ANN", _metric_series(results, metric)) for label, results in runs.items()]
    _plot(curves, path, title or f"{metric} vs time steps", ylabel=metric, reference=reference)


def _some_metrics(results: dict) -> dict:
    """One scored entry of a sweep (its first T, else its ANN): what names its headline metrics."""
    return next(iter(results.get("snn", {}).values()), results.get("ann"))


def _metric_series(results: dict, key: str):
    """(steps, values, ANN value or None) of one headline metric of a sweep; a metric it lacks is an error."""
    snn = results.get("snn", {})
    rows = list(snn.values()) + ([results["ann"]] if "ann" in results else [])
    if not rows or key not in headline(rows[0]):
        known = sorted(headline(rows[0])) if rows else []
        raise SpikedetError(f"no metric {key!r} in these results (they have {', '.join(known) or 'none'})")
    ann = headline(results["ann"])[key] if "ann" in results else None
    return [int(t) for t in snn], [headline(m)[key] or 0.0 for m in snn.values()], ann


def _plot(curves, path, title: str, ylabel: str, reference: Optional[float] = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ticks = set()
    for i, (label, ann_label, (steps, values, ann)) in enumerate(curves):
        if steps:
            ax.plot(steps, values, "o-", color=f"C{i}", label=label)
            ticks.update(steps)
        if ann is not None:
            ax.axhline(ann, color=f"C{i}", ls="--", lw=1, label=ann_label)
    if reference is not None:
        ax.axhline(reference, color="grey", ls=":", label=f"reference {reference:g}")
    if ticks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.set(xlabel="time steps T", ylabel=ylabel, title=title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
