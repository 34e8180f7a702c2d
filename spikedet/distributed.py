"""Scoring on several processes (torchrun): each scores a shard of the images, rank 0 gathers the
detections and scores them once, so the mAP is the one a single process gives.

    torchrun --nproc_per_node 4 tools/eval_map.py --weights net.snn.pt --gt-coco instances_val2017.json ...

gloo on CPUs, NCCL on GPUs (each process then takes the GPU of its LOCAL_RANK). A failure on one process stops
them all with the same one-line error (together, exchange).
"""
import contextlib
import os
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist

from .errors import SpikedetError

_failure_shared = False  # this process has learned of a failure in an exchange (every process has, then)


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


@contextlib.contextmanager
def together():
    """A torchrun job's work: a failure on one process stops every process with the same one-line error (a
    process left waiting in a collective for one that failed would wait forever); then the group is left.

    Every collective of the work goes through exchange(), so the failed process can always meet the others
    in the one they wait in, and tell them. A single process keeps its errors as they are."""
    global _failure_shared
    _failure_shared = False
    try:
        yield
    except Exception as e:
        if not dist.is_initialized() or _failure_shared:
            raise
        rank = rank_and_size()[0]
        message = str(e) if isinstance(e, SpikedetError) else f"process {rank}: {type(e).__name__}: {e}"
        exchange(None, message.splitlines()[0] if message else type(e).__name__)  # raises it on every process
    else:
        exchange(None)  # wait for all: one may fail after the last exchange
    finally:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def exchange(payload, error: Optional[str] = None) -> list:
    """Every process's payload, in rank order; when any process reports an error, every one raises the first
    (by rank) as a SpikedetError."""
    global _failure_shared
    if not dist.is_initialized():
        if error:
            raise SpikedetError(error)
        return [payload]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (error, payload))
    errors = [e for e, _ in gathered if e]
    if errors:
        _failure_shared = True
        raise SpikedetError(errors[0])
    return [p for _, p in gathered]


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
    gathered = exchange(mine)
    if rank != 0:
        return None
    merged = [None] * total
    for r, part in enumerate(gathered):
        merged[r::size] = part
    return merged
