"""Each process keeps its own device's random state in a checkpoint, so a resume where a process
sees fewer GPUs (an 8-GPU node resumed on 4, one GPU per SLURM task) restores it. No GPU here:
torch.cuda is simulated, its devices' generators held in a dict."""

from __future__ import annotations

import pytest
import torch

from vilt_lab.training import state_io


class SimulatedCuda:
    """``count`` visible devices, this process on ``current``; each state a tensor naming its device.

    ``set_rng_state_all`` fails as torch's does when handed more states than devices."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int, current: int) -> None:
        self.count, self.current = count, current
        self.states = {d: torch.full((16,), d, dtype=torch.uint8) for d in range(count)}
        for name in ("is_available", "device_count", "current_device"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def current_device(self) -> int:
        return self.current

    def get_rng_state(self, device: int | str = "cuda") -> torch.Tensor:
        return self.states[self.index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device: int | str = "cuda") -> None:
        self.states[self.index(device)] = state.clone()

    def get_rng_state_all(self) -> list[torch.Tensor]:
        return [self.get_rng_state(d) for d in range(self.count)]

    def set_rng_state_all(self, states: list[torch.Tensor]) -> None:
        for device, state in enumerate(states):
            if device >= self.count:
                raise IndexError(f"device {device} out of range ({self.count} visible)")
            self.set_rng_state(state, device)

    def index(self, device: int | str) -> int:
        return self.current if device == "cuda" else int(str(device).removeprefix("cuda:"))


def test_a_process_saves_its_own_device_state_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = SimulatedCuda(monkeypatch, count=8, current=3)
    tensors, _ = state_io.capture_rng()
    assert set(tensors) == {"torch", "cuda"}
    assert torch.equal(tensors["cuda"], torch.full((16,), 3, dtype=torch.uint8))
    assert cuda.states[3].eq(3).all()


def test_its_state_comes_back_where_the_process_sees_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    SimulatedCuda(monkeypatch, count=8, current=3)
    tensors, meta = state_io.capture_rng()
    resumed = SimulatedCuda(monkeypatch, count=1, current=0)  # SLURM: one GPU per task
    state_io.restore_rng(tensors, meta)
    assert torch.equal(resumed.states[0], torch.full((16,), 3, dtype=torch.uint8))


def test_a_state_saved_with_more_device_states_than_present_restores_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The earlier format: every visible device's state, from a process on device 1 of 8.
    tensors = {"torch": torch.get_rng_state()}
    tensors |= {f"cuda/{d}": torch.full((16,), 100 + d, dtype=torch.uint8) for d in range(8)}
    _, meta = state_io.capture_rng()
    resumed = SimulatedCuda(monkeypatch, count=4, current=1)  # the same rank on a 4-GPU node
    state_io.restore_rng(tensors, meta)
    assert torch.equal(resumed.states[1], tensors["cuda/1"])
    assert all(resumed.states[d].eq(d).all() for d in (0, 2, 3))  # the other processes' devices
