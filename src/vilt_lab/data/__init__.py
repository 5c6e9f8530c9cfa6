"""Data: shard writing and reading, the streaming pipeline, transforms and dataset sources."""
