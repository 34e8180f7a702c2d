"""Detection heads of a converted network: integrating branches whose mean potentials are decoded exactly as
the ANN's head decodes its outputs."""
import copy

import torch
from torch import nn


class DecodingHead(nn.Module):
    """A head that only decodes (darknet's [yolo] / [region] layers): its inputs are already the running sums
    of integrating convolutions."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.decoder = copy.deepcopy(head)

    def forward(self, feats):
        return list(feats)

    def decode(self, means):
        return self.decoder.decode(means)


class SpikingDetect(nn.Module):
    """ultralytics' Detect head: spiking branches ending in integrators, decoded with Detect's public parts
    (its DFL and decode_bboxes) and ultralytics' make_anchors, as Detect decodes in inference."""

    def __init__(self, detect: nn.Module, box_branches, cls_branches):
        super().__init__()
        self.box_branches, self.cls_branches = nn.ModuleList(box_branches), nn.ModuleList(cls_branches)
        self.decoder = copy.deepcopy(detect)
        for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):  # only the decoding is kept
            if hasattr(self.decoder, name):
                setattr(self.decoder, name, None)

    def forward(self, feats):
        """Running sums, per level: box outputs then class outputs."""
        return [b(f) for b, f in zip(self.box_branches, feats)] + [c(f) for c, f in zip(self.cls_branches, feats)]

    def decode(self, means):
        """Mean output currents per level -> (B, 4 + nc, anchors), as the ANN head decodes."""
        from ultralytics.utils.tal import make_anchors

        nl = len(self.box_branches)
        boxes, scores = means[:nl], means[nl:]
        bs = boxes[0].shape[0]
        box = torch.cat([b.reshape(bs, b.shape[1], -1) for b in boxes], -1)
        score = torch.cat([s.reshape(bs, s.shape[1], -1) for s in scores], -1)
        anchors, strides = (a.transpose(0, 1) for a in make_anchors(boxes, self.decoder.stride, 0.5))
        dbox = self.decoder.decode_bboxes(self.decoder.dfl(box), anchors.unsqueeze(0)) * strides
        return torch.cat((dbox, score.sigmoid()), 1)
