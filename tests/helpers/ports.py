"""A free TCP port for a torchrun rendezvous on this machine, and the torchrun command using one."""

from __future__ import annotations

import os
import socket
import sys


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; it may be taken again before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: str | os.PathLike, *args: str, nproc: int = 2) -> list[str]:
    """The command that runs `script` in `nproc` processes on this machine, on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *args,
    ]
