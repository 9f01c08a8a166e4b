"""Multi-process training on PyTorch's own engine: torchrun + DistributedDataParallel.

NCCL on GPUs, gloo on CPU. Nothing here replaces torch.distributed; it only reads torchrun's environment,
sets timeouts so a dead rank ends the job instead of hanging it, and provides the one collective the
OSM+CAA loss needs: an all-gather that keeps the gradient of the local part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist

from tracklink import TracklinkError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_torchrun() -> DistEnv:
    """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK for each worker; a plain run has none."""
    return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def init(env: DistEnv, device: torch.device, timeout_s: float) -> None:
    """Join the process group. The timeout bounds every collective, so a rank that hangs ends the job."""
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank in rank order; the gradient flows back to this rank's part only.

    The other ranks' parts are constants here: each rank backpropagates the loss of the global batch into
    its own samples, and DDP's gradient all-reduce then adds the contributions of every rank.
    """
    if not dist.is_initialized():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def all_gather_objects(obj: Any) -> list[Any]:
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any: ranks agree on stopping at the same step."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def launch(nproc: int, argv: Sequence[str]) -> int:
    """`tracklink train --nproc N ...`: run torchrun with N local workers of `python -m tracklink train ...`."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "tracklink"])
    # Set the worker arguments after parsing: torchrun's parser would take e.g. `--p` as its own option.
    args.training_script_args = list(argv)
    try:
        run(args)
    except ChildFailedError as exc:
        failures = "; ".join(
            f"rank {rank} exited with {f.exitcode}" + (f" ({f.signal_name()})" if f.exitcode < 0 else "")
            for rank, f in sorted(exc.failures.items()))
        raise TracklinkError(f"distributed training stopped: {failures}. The other ranks were ended; the last "
                             "checkpoint is intact, continue with --resume") from None
    return 0
