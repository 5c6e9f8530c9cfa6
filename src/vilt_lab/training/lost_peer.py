"""A collective that gave up on the other processes: one died, stalled or lost its network.

Every all-reduce and barrier waits at most `trainer.collective_timeout_min` (the process group's
timeout); a process that waited that long, or whose peer closed the connection, ends the run with
one message naming its rank, the timeout and the cause, instead of waiting forever or dying in a
backend's traceback. The processes that see it all stop; the launcher (torchrun, SLURM) ends the
rest.
"""

from __future__ import annotations

import torch.distributed as dist

from ..config.errors import UserError

# What the backends say when a peer is gone: gloo's timeout and closed connection, NCCL's errors.
SIGNS = ("Timed out", "timed out", "Connection closed by peer", "Connection reset by peer")


def is_lost_peer(err: BaseException) -> bool:
    return isinstance(err, dist.DistBackendError) or (
        isinstance(err, RuntimeError) and any(sign in str(err) for sign in SIGNS)
    )


class LostPeer(UserError, RuntimeError):
    """Rank `rank` gave up on a collective (see the module)."""

    def __init__(self, rank: int, timeout_min: float, cause: str) -> None:
        super().__init__(rank, timeout_min, cause)
        self.rank, self.timeout_min, self.cause = rank, timeout_min, cause

    def __str__(self) -> str:
        return (
            f"rank {self.rank}: a collective gave up on the other processes (one died, stalled or "
            f"lost its network; trainer.collective_timeout_min={self.timeout_min:g}): {self.cause.strip()[:300]}"
        )
