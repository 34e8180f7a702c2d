"""Scoring on several processes (torchrun): each scores a shard of the images, rank 0 gathers the
detections and scores them once, so the mAP is the one a single process gives.

    torchrun --nproc_per_node 4 tools/eval_map.py --weights net.snn.pt --gt-coco instances_val2017.json ...

gloo on CPUs, NCCL on GPUs (each process then takes the GPU of its LOCAL_RANK).
"""
import os
from typing import List, Sequence

import torch
import torch.distributed as dist


def init_from_env(device: str) -> str:
    """Join the process group torchrun describes in the environment (once); returns this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    cuda = str(device).startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def finish():
    """Wait for every process, then leave the process group (a process that exits with the group still open
    can abort in gloo's teardown while rank 0 is still scoring)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_and_size():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main() -> bool:
    return rank_and_size()[0] == 0


def shard(items: Sequence) -> list:
    """This process's share: every world_size-th item from its rank on."""
    rank, size = rank_and_size()
    return list(items[rank::size])


def unshard(mine: list, total: int) -> List:
    """On rank 0: all processes' shards interleaved back into the original order; elsewhere None."""
    rank, size = rank_and_size()
    if size == 1:
        return mine
    gathered = [None] * size if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if rank != 0:
        return None
    merged = [None] * total
    for r, part in enumerate(gathered):
        merged[r::size] = part
    return merged
