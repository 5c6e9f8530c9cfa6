"""A `torch.compile` backend for tests about graph structure: no code generation."""

from __future__ import annotations

import torch


class CountingBackend:
    """Runs each graph dynamo hands it as traced, counting the graphs and the calls that went
    through one (the counts are dynamo's, whichever backend would compile each graph)."""

    def __init__(self) -> None:
        self.graphs = self.calls = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        self.graphs += 1

        def run(*args: torch.Tensor):
            self.calls += 1
            return graph.forward(*args)

        return run
