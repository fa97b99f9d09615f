"""The text of a task's error, read without unpickling it.

An executor encodes a task's error as a pickle of ``(exception or None, traceback text,
message)``. A dashboard must not run a tenant's code by unpickling it, so the pickle's opcodes
are walked (`pickletools.genops`, which constructs nothing) and its strings collected: the
traceback is the longest one that looks like one, else the longest string.
"""

from __future__ import annotations

import pickletools

__all__ = ["error_text"]


def error_text(data: bytes, limit: int = 16_384) -> str:
    strings: list[str] = []
    try:
        for _op, arg, _pos in pickletools.genops(data):
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # cut or malformed (it is cut to a limit): what was read
        pass
    if not strings:
        return "(no text)"
    tracebacks = [s for s in strings if "Traceback" in s]
    text = max(tracebacks or strings, key=len)
    return text[:limit]
