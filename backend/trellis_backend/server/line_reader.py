"""Bounded reading of request lines, and recovering a request's id from a line that cannot be parsed.

``readline()`` without a limit would hold a 2 GB line in memory before the size check; here a line
is read in pieces of at most the limit, and the rest of an over-long line is skipped in bounded
chunks. Only the head of such a line is kept, so that the error can name the request id (the
add-on then fails that job instead of waiting for an answer that never comes).
"""
from __future__ import annotations

import json
import re

HEAD_BYTES = 64 * 1024
DRAIN_CHUNK = 1024 * 1024
_ID = re.compile(rb'"id"\s*:\s*("(?:[^"\\\r\n]|\\.){1,512}")')


def read_request_lines(stream, limit):
    """Yield ``(line, None)`` for each line, or ``(head, total_bytes)`` for a line longer than `limit`."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit:
            yield line, None
            continue
        head, total = line[:HEAD_BYTES], len(line)
        while not line.endswith(b"\n"):  # skip the rest of the line without keeping it
            line = stream.readline(DRAIN_CHUNK)
            if not line:
                break
            total += len(line)
        yield head, total


def recover_id(raw):
    """The string id of a (possibly broken or truncated) request line, or None."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    try:
        msg = json.loads(raw)
        rid = msg.get("id") if isinstance(msg, dict) else None
        return rid if isinstance(rid, str) and rid and _sendable(rid) else None
    except Exception:  # truncated, too deep, not JSON: fall back to the first "id": "..." in the text
        pass
    m = _ID.search(raw[:HEAD_BYTES])
    if not m:
        return None
    try:
        rid = json.loads(m.group(1))
    except ValueError:
        return None
    return rid if isinstance(rid, str) and rid and _sendable(rid) else None


def _sendable(rid):
    try:
        rid.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
