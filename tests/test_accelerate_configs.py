"""The example launch configs are what `accelerate launch --config_file` reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"


@pytest.mark.parametrize(
    ("name", "machines", "processes"), [("one_node_8gpu.yaml", 1, 8), ("multi_node.yaml", 8, 64)]
)
def test_example_configs_load_with_accelerates_own_loader(name, machines, processes):
    config = load_config_from_file(str(EXAMPLES / name))
    assert isinstance(config, ClusterConfig)
    assert (config.num_machines, config.num_processes) == (machines, processes)
    assert config.distributed_type == "MULTI_GPU" and config.mixed_precision == "bf16"
