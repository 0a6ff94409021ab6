"""Read what a sandbox sent back, in a child process of its own: ``python decode.py STREAM OUT MEMORY_MB``.

Everything in the stream may be forged by the student's code (it runs in the runner's process), so
the reading is bounded before it starts: the process caps its own memory, reads at most
``MAX_EVENTS`` JSON lines of at most ``MAX_LINE`` bytes, and each result's arrays are ``.npy`` blobs
whose header gives dtype and shape before any data is read (plain numbers only: no pickle, no
objects), with caps on their count, dimensions and bytes. No container is walked as a tree: JSON
cannot share a node, and its depth is capped. It writes ``OUT/decoded.json`` (the events, and per
exercise its result, ``{"duplicate": true}`` or ``{"unreadable": why}``) and ``OUT/<i>.npy``.
Imports only the standard library and numpy, so it starts in a fraction of a second.
"""
from __future__ import annotations

import io
import json
import resource
import sys
from pathlib import Path

MAX_EVENTS = 5_000
MAX_EVENT = 8_192  # bytes of an event's line
MAX_LINE = 1 << 20  # bytes of a result's head
MAX_ARRAYS = 64  # per result
MAX_ARRAY_BYTES = 16 << 20
MAX_DIMS = 8


def read_array(blob: bytes):
    """One .npy blob, checked from its header before its data is touched."""
    import numpy as np
    from numpy.lib import format as npy

    f = io.BytesIO(blob)
    version = npy.read_magic(f)
    shape, fortran, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(f)
    if dtype.kind not in "biufc" or dtype.hasobject or len(shape) > MAX_DIMS:
        raise ValueError(f"an array of dtype {dtype} and {len(shape)} dimensions")
    count = 1
    for side in shape:
        count *= side
    if count * dtype.itemsize > MAX_ARRAY_BYTES or count * dtype.itemsize != len(blob) - f.tell():
        raise ValueError(f"an array of shape {shape} in {len(blob) - f.tell()} bytes")
    array = np.frombuffer(blob, dtype=dtype, count=count, offset=f.tell())
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def read_result(payload: bytes, out: Path, first: int) -> tuple[dict, int]:
    """A result's JSON head and its arrays (saved as OUT/<first + i>.npy); returns (head, arrays saved)."""
    import numpy as np

    stop = payload.find(b"\n")
    if stop < 0 or stop > MAX_LINE:
        raise ValueError("a result without its head line")
    head = json.loads(payload[:stop])
    sizes = head.pop("arrays", []) if isinstance(head, dict) else None
    if not isinstance(sizes, list) or len(sizes) > MAX_ARRAYS or not all(type(s) is int and s > 0 for s in sizes):
        raise ValueError("a result whose arrays are not listed")
    at = stop + 1
    if at + sum(sizes) != len(payload):
        raise ValueError("a result whose arrays do not add up to its size")
    for i, size in enumerate(sizes):
        np.save(out / f"{first + i}.npy", read_array(payload[at:at + size]), allow_pickle=False)
        at += size
    head["first_array"] = first
    return head, len(sizes)


def decode(stream: bytes, out: Path) -> dict:
    events, outputs, at, saved = [], {}, 0, 0
    while at < len(stream) and len(events) < MAX_EVENTS:
        stop = stream.find(b"\n", at, at + MAX_EVENT + 1)
        stop = min(len(stream), at + MAX_EVENT) if stop < 0 else stop
        try:
            event = json.loads(stream[at:stop])
        except (ValueError, RecursionError):
            event = None
        at = stop + 1
        if not isinstance(event, dict):
            continue
        size = event.get("bytes", 0)
        if type(size) is int and 0 < size <= len(stream) - at:
            name = event.get("end")
            if isinstance(name, str):
                if name in outputs:
                    outputs[name] = {"duplicate": True}
                else:
                    try:
                        outputs[name], count = read_result(stream[at:at + size], out, saved)
                        saved += count
                    except (ValueError, RecursionError, TypeError, KeyError, EOFError, OverflowError) as error:
                        outputs[name] = {"unreadable": f"{type(error).__name__}: {str(error)[:200]}"}
            at += size
        events.append(event)
    return {"events": events, "outputs": outputs, "flooded": at < len(stream)}


def main(stream_path: str, out_dir: str, memory_mb: str) -> None:
    limit = int(memory_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = Path(out_dir)
    data = decode(Path(stream_path).read_bytes(), out)
    (out / "decoded.json").write_text(json.dumps(data))


if __name__ == "__main__":
    main(*sys.argv[1:4])
