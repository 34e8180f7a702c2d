"""The round trip scored: the same images through spikedet's step simulation and through the exported NIR
graph in Norse (roundtrip.py), both decoded by the SNN's own Detect decoder, NMS'd and scored alike, with
each spiking layer's spikes per image from both sides."""
from typing import Dict, List, Sequence

import torch

from ..defaults import DEFAULTS
from ..eval.report import headline
from ..inference import load_image, postprocess, preprocess
from ..networks import default_eval_iou, default_resize
from ..snn.statistics import SpikeMonitor
from ..validate import GroundTruth
from .roundtrip import NorseRun, load_norse


def round_trip(snn, ann, nir_path, outputs: Sequence[str], truth: GroundTruth, timesteps: Sequence[int],
               batch: int = 8, burn_in: int = 0) -> dict:
    """{"ann": headline, "spikedet": {T: headline}, "norse": {T: headline}, "max_abs_output_diff": {T: ..},
    "spikes": {layer: {"spikedet": n, "norse": n}}} over the ground truth's images (per image spikes)."""
    imgsz, resize = snn.meta["imgsz"], default_resize(snn)
    iou, wanted = default_eval_iou(snn), sorted(set(timesteps))
    module, graph = load_norse(nir_path)
    norse = NorseRun(module, graph, outputs)
    dets = {"ann": [], **{(side, t): [] for side in ("spikedet", "norse") for t in wanted}}
    diff = {t: 0.0 for t in wanted}
    with SpikeMonitor(snn) as monitor, torch.no_grad():
        for k in range(0, len(truth.records), batch):
            records = truth.records[k:k + batch]
            images = [load_image(r.path) for r in records]
            x = torch.stack([preprocess(im, imgsz, resize) for im in images])
            shapes = [im.shape for im in images]

            def detect(raw):
                return postprocess(raw, imgsz, shapes, resize, DEFAULTS["conf_eval"], iou)
            dets["ann"] += detect(ann(x)[0])
            ours = snn.simulate(x, wanted, method="steps", burn_in=burn_in)
            theirs = {t: snn.head.decode(means) for t, means in norse(x, wanted, burn_in).items()}
            for t in wanted:
                dets[("spikedet", t)] += detect(ours[t])
                dets[("norse", t)] += detect(theirs[t])
                diff[t] = max(diff[t], float((ours[t] - theirs[t]).abs().max()))
        report = monitor.report(wanted[-1], len(truth.records))
    labels = truth.label_map({int(k): v for k, v in snn.names.items()})

    def score(found: List) -> Dict[str, float]:
        return headline(truth.score(truth.results(found, labels)))
    theirs = norse.spikes_per_image()
    return {"images": len(truth.records), "ann": score(dets["ann"]),
            "spikedet": {t: score(dets[("spikedet", t)]) for t in wanted},
            "norse": {t: score(dets[("norse", t)]) for t in wanted},
            "max_abs_output_diff": diff,
            "spikes": {row["layer"]: {"spikedet": row["spikes"], "norse": theirs.get(row["layer"])}
                       for row in report["layers"] if "spikes" in row}}
