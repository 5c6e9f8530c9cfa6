"""Read an offline W&B run back: its config and logged history, without syncing it.

An offline run keeps everything in `offline-run-*/run-<id>.wandb`: a 7-byte header (":W&B",
magic 0xBEE1, version 0), then LevelDB-log framing (32 KiB blocks; each fragment has a CRC32,
a 2-byte length and a type FULL/FIRST/MIDDLE/LAST) around protobuf `Record`s. The W&B Python
package no longer ships a reader (it moved to its Go core), so this is one, for checking what a
compute node recorded before `wandb sync` uploads it.

    PYTHONPATH=tests python -m helpers.wandb_offline runs/demo/wandb/offline-run-*/
"""

from __future__ import annotations

import json
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes, path: Path) -> Iterator[bytes]:
    if not data.startswith(_HEADER):
        raise ValueError(f"{path} is not a W&B run file (no ':W&B' header)")
    pos, pending = _HEADER_LEN, b""
    while pos + 7 <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < 7:  # a block's tail too short for a fragment header is padding
            pos += room
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        if length == 0 and kind == 0:  # zero padding: the writer's file is pre-allocated
            pos += room
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")


def read_offline_run(run_path: str | Path) -> dict[str, Any]:
    """{"config": {key: value}, "history": [{key: value, "_step": n}, ...], "run": {"name",
    "group", "job_type", "tags"}, "finished": bool} of one offline run; `finished` says the run's exit record is there (W&B's service writes the
    file asynchronously, so a reader right after `finish()` may still see part of it).

    run_path: the `offline-run-*` directory or its `.wandb` file.
    """
    from wandb.proto import wandb_internal_pb2

    path = Path(run_path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if not files:
            raise FileNotFoundError(f"no .wandb file in {path}")
        path = files[0]
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    run: dict[str, Any] = {}
    finished = False
    for payload in _payloads(path.read_bytes(), path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            history.append(row)
        elif kind == "run":
            run = {
                "name": record.run.display_name,
                "group": record.run.run_group,
                "job_type": record.run.job_type,
                "tags": list(record.run.tags),
            }
        elif kind == "exit":
            finished = True
    return {"config": config, "history": history, "run": run, "finished": finished}


def wait_for_offline_run(run_path: str | Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """`read_offline_run` once the run's exit record is on disk (or `timeout_s` has passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        recorded = read_offline_run(run_path)
        if recorded["finished"] or time.monotonic() > deadline:
            return recorded
        time.sleep(0.5)


if __name__ == "__main__":
    run = read_offline_run(sys.argv[1])
    print(json.dumps({"config_keys": sorted(run["config"]), "history_rows": len(run["history"])}, indent=1))
    for row in run["history"][-3:]:
        print(json.dumps(row))
