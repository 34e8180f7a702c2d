"""Weight normalization (Diehl et al. 2015; Rueckauer et al. 2017; channel-wise: Kim et al., Spiking-YOLO
2020): each spiking layer l gets an output scale lambda_l (one per output channel, or one per layer), and
    W_l[o, i] <- W_l[o, i] * lambda_{l-1}[i] / lambda_l[o],   b_l[o] <- b_l[o] / lambda_l[o],
so every neuron has threshold 1 and a spike stands for lambda_l[o] of ANN activity."""
import copy
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]) -> nn.Conv2d:
    """A new float32 Conv2d with bias computing bn(conv(x)) in eval mode (torch's fuse_conv_bn_eval)."""
    conv = copy.deepcopy(conv).float().eval()
    if bn is not None:
        return fuse_conv_bn_eval(conv, copy.deepcopy(bn).float().eval())
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
    return conv


def normalize_conv(conv: nn.Conv2d, in_scale: torch.Tensor, out_scale: torch.Tensor) -> nn.Conv2d:
    """Rescale so input spikes worth in_scale[i] and unit thresholds represent out_scale[o] (in place)."""
    out_ch, in_per_group = conv.weight.shape[:2]
    group_of_out = torch.arange(out_ch) // (out_ch // conv.groups)
    in_index = group_of_out.view(-1, 1) * in_per_group + torch.arange(in_per_group).view(1, -1)
    with torch.no_grad():
        conv.weight.mul_(in_scale[in_index].view(out_ch, in_per_group, 1, 1) / out_scale.view(-1, 1, 1, 1))
        conv.bias.div_(out_scale)
    return conv
