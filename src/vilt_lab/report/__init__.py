"""The paper's tables: their definitions (experiments/), the runs they need, and result.md."""
