"""Several processes (``torchrun`` / ``accelerate launch``, one per GPU or CPU share): one drives, all decode.

The model is *driver and helpers*, not every-rank-runs-everything. Rank 0 runs the command (a ladder,
a back-translation, an n-best job) exactly as a single process would: it alone reads configs, tunes,
writes files and keeps stage bookkeeping, so nothing in the run directory is written twice and no
file is read by one rank while another writes it. The other ranks wait in :func:`serve` until the
driver hands them a piece of collective work:

* decoding and scoring (``LSTMTranslator.translate``/``score`` of a translator loaded from model
  directories): every rank loads the same model (cached), takes its share of the *driver's own
  length-sorted batches* and sends the results back; the driver puts them in input order. The
  batches are exactly the ones a single process would decode, so outputs are bitwise those of one
  process (same lines, order, scores and decoder-call counts), not merely close;
* training (``core_seq2seq.training.train``): every rank joins the data-parallel accelerate loop.

A single process (no ``WORLD_SIZE``, or 1) never touches ``torch.distributed``: :func:`drive` just
calls the command. Work that is not a translator call (MBR utilities, tuning, writing) runs on the
driver alone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# Helpers wait for the driver's next request for as long as the driver works alone (tuning, MBR,
# writing): hours on a CPU ladder, so torch's 30-minute default would kill a healthy run. A driver
# that dies is noticed by torchrun, which stops the others.
TIMEOUT = timedelta(days=7)

_driving = False  # this process is rank 0 of several, running the command, outside collective work
_started = False  # drive() is running in this process (a command's nested CLI call is part of it)
_broken = False  # an error escaped collective work: helpers may be mid-collective, so no release message
_group = None  # the gloo group that carries requests and results (CPU objects, also next to NCCL)


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun and accelerate set both)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def fresh_accelerator_state() -> None:
    """Forget the accelerate state an earlier training in this process left (one process only).

    accelerate keeps one process-wide state and refuses an ``Accelerator`` with another precision
    than the first one made; a process that trains several models in turn (a ladder's worker) must
    start each from a clean state (trl's trainers reset it themselves). Under torchrun the state
    holds the process group, so it is kept."""
    if world()[1] > 1:
        return
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def device() -> str:
    """Where a run decodes: this process's GPU when there is one (``init`` picked it), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_main() -> bool:
    return world()[0] == 0


def init() -> None:
    """Join the process group (gloo for requests and CPU work; NCCL too where GPUs are present, for
    training), once. accelerate finds the group initialised and uses it."""
    global _group
    if _group is not None or world()[1] <= 1:
        return
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # "cuda" is this rank's own GPU
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    _group = dist.new_group(backend="gloo", timeout=TIMEOUT)


def driving() -> bool:
    """True in rank 0 of several while it runs the command (not inside collective work)."""
    return _driving


def drive(command: Callable[[], T]) -> T | None:
    """Run ``command`` on rank 0 while the other ranks serve its collective requests; with one
    process, just run it. Helpers return None (their exit status is 0; the driver's is the run's)."""
    global _driving, _started
    if world()[1] <= 1 or _started:
        return command()
    import torch.distributed as dist

    _started = True
    init()
    if not is_main():
        serve()
        dist.destroy_process_group()
        return None
    _driving = True
    try:
        return command()
    finally:
        _driving = False
        if not _broken:  # release the helpers (after a failed collective, torchrun stops them when we exit)
            _broadcast(None)
            dist.destroy_process_group()


def driven(main: Callable[..., int]) -> Callable[..., int]:
    """Decorator of a CLI ``main(argv)``: the command runs on rank 0, the other ranks serve (exit 0)."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        return drive(lambda: main(argv)) or 0

    return wrapper


def serve() -> None:
    """A helper's loop: run each ``(function, args)`` the driver broadcasts, until it sends None."""
    while True:
        request = _broadcast(None)
        if request is None:
            return
        function, args = request
        function(*args)


@contextmanager
def collective(function: Callable[..., Any] | None, *args: Any) -> Iterator[bool]:
    """On the driver: have every helper call ``function(*args)`` now, and run the block as the
    driver's own part of that work (yields True). Elsewhere, or with ``function`` None: yields False
    and the block runs alone, as in a single process."""
    global _driving, _broken
    if not _driving or function is None:
        yield False
        return
    _broadcast((function, args))
    _driving = False  # work inside (a translator call, a training loop) must not start new requests
    try:
        yield True
    except BaseException:
        _broken = True
        raise
    finally:
        _driving = True


def share(n_items: int, sharded: bool) -> range:
    """The indices (of batches) this rank works on: every world-size-th one from its rank. Batches
    come length-sorted, so neighbours cost about the same and each rank gets an even share."""
    rank, size = world()
    return range(rank, n_items, size) if sharded and size > 1 else range(n_items)


def gather(local: T, sharded: bool) -> list[T] | None:
    """Every rank's ``local`` (rank order) on the driver, None on helpers; ``[local]`` when not sharded."""
    if not sharded or world()[1] <= 1:
        return [local]
    import torch.distributed as dist

    out: list[Any] | None = [None] * world()[1] if is_main() else None
    dist.gather_object(local, out, dst=0, group=_group)
    return out


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_group)
    return box[0]


@functools.lru_cache(maxsize=8)
def cached(loader: Callable[..., T], *args: Any) -> T:
    """A helper's copy of an object the driver loaded (a model): loaded once per distinct ``args``."""
    return loader(*args)
