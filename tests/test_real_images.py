"""The shipped distilled network on real COCO images (skipped without ../shared/data): the burst SNN at its
T = L is its dual-error ANN, and it keeps most of darknet's accuracy at 8 steps."""
from pathlib import Path

from spikedet import SpikingYOLO

from conftest import SHARED_DATA, needs_real_data

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "yolov3-tiny-coco-de.pt"
COCO_GT = SHARED_DATA / "coco" / "annotations" / "instances_val2017.json"
DARKNET_AP50 = 0.421  # darknet's yolov3-tiny on these 206 images, decoded as trained (tests/test_darknet.py)


@needs_real_data
def test_shipped_network_keeps_darknets_accuracy_at_eight_steps():
    results = SpikingYOLO(SHIPPED).val(gt_coco=COCO_GT, timesteps=[8])
    ann, snn = results["ann"]["coco"]["AP50"], results["snn"][8]["coco"]["AP50"]
    assert abs(snn - ann) < 0.005, (snn, ann)  # burst neurons at T = L: the dual-error ANN, up to float rounding
    # measured 0.342 (81%; before its anchors were mended, 0.220 of the mis-decoded darknet's 0.250); 0.75 leaves
    # room for the up-to-0.005 a CPU's rounding moved one file's figure (docs/real_images.md) and still fails a file
    # that lost the training or is decoded with the wrong anchors again
    assert snn > 0.75 * DARKNET_AP50, snn
