"""The whole mission on the embedded shapes data, on a CPU in minutes.

make the data -> train the dual-error Tiny-YOLO -> convert it to an SNN -> score the ANN and the SNN at a
sweep of T (COCO metrics on the test split) -> detect on a few test images -> one results table, also
saved as runs/demo/results.json and a PNG of mAP against T.
"""
import shutil
import time
from pathlib import Path
from typing import Sequence

from .api import SpikingYOLO
from .data.shapes import make_shapes_dataset
from .defaults import DEMO
from .eval.report import format_report, headline, plot_sweep
from .fileio import atomic_write_json


def run_demo(output="runs/demo", data_root="data/shapes", epochs: int = DEMO["epochs"],
             timesteps: Sequence[int] = DEMO["timesteps"], progress: bool = True) -> dict:
    """Run every step; return (and save) {"ann": {...}, "snn": {T: {...}}, "wall_s": ..., ...}."""
    start = time.time()
    output = Path(output)
    data = make_shapes_dataset(data_root, imgsz=DEMO["imgsz"], progress=progress)

    model = SpikingYOLO(DEMO["model"], scale=DEMO["scale"], dual_error={"levels": DEMO["levels"]})
    model.train(data["yolo"], epochs=epochs, imgsz=DEMO["imgsz"], batch=DEMO["batch"], project=output,
                name="train", exist_ok=True, plots=False, seed=0, deterministic=True)
    snn_path = output / "shapes-yolov3-tiny-n-de.snn.pt"
    snn = model.convert(output=snn_path, imgsz=DEMO["imgsz"])
    scored = snn.val(gt_coco=data["coco"]["test"], timesteps=timesteps, batch=DEMO["eval_batch"],
                     progress=progress, verbose=False)
    samples = sorted((data["voc"] / "JPEGImages").glob("*.jpg"))[-DEMO["sample_images"]:]
    sample_dir = output / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    for p in samples:
        shutil.copyfile(p, sample_dir / p.name)
    detected = snn.predict(sample_dir, timesteps=DEMO["levels"], save=True, project=output, name="detect",
                           save_rates=True, progress=progress)

    results = {"ann": headline(scored["ann"]),
               "snn": {t: headline(m) for t, m in scored["snn"].items()},
               "wall_s": round(time.time() - start, 1),
               "metric": "COCO mAP50 (AP50) and mAP50_95 (AP) on the shapes test split, pycocotools",
               "settings": {**DEMO, "epochs": epochs, "timesteps": list(timesteps)},
               "files": {"ann": model.source, "snn": str(snn_path), "detections": str(detected.output)},
               "full": scored}
    atomic_write_json(output / "results.json", results)
    plot_sweep(scored, output / "map_vs_t.png", title="shapes test: dual-error Tiny-YOLO, ANN vs SNN")
    print(format_report(scored))
    print(f"\nwall time {results['wall_s']} s; results in {output / 'results.json'}, plot in "
          f"{output / 'map_vs_t.png'}, annotated images in {detected.output}")
    return results
