"""Which tracebacks in a benchmark's worker logs are failures.

A benchmark fails on any traceback its workers log (a job that raised is a bug), except one
Dramatiq's consumer logged for a broker that stalled and then restarted itself from
("Consumer encountered an unexpected error." for a Redis read timeout on a loaded machine,
then "Restarting consumer"): the jobs go on and the figures stand.
"""

from __future__ import annotations

import re

TRACEBACK = "Traceback (most recent call last):"
_CONSUMER_ERROR = "Consumer encountered an unexpected error."
_RESTARTED = "Restarting consumer"
_BROKER_STALL = re.compile(
    r"^(redis\.exceptions\.(TimeoutError|ConnectionError)|"
    r"pika\.exceptions\.\w*(Connection|Channel)\w*|"
    r"(Connection|Timeout)Error)\b"
)


_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def failures(log: str) -> list[str]:
    """The tracebacks of ``log`` that are failures, each with the line that logged it (a
    chain of exceptions counts as one traceback, judged by its last exception)."""
    found: list[str] = []
    parts = log.split(TRACEBACK)
    said = parts[0].rstrip("\n").rpartition("\n")[2]  # the log line that carried it
    chain = ""
    for block in parts[1:]:
        chain += TRACEBACK + block
        tail = block.rstrip("\n").rpartition("\n")[2]
        if tail.startswith(_CHAINED):
            continue  # the chain goes on in the next part
        lines = [line for line in block.splitlines() if line.strip()]
        last = next((line for line in lines if not line.startswith(" ")), "")
        after = block[block.find(last) + len(last) :] if last else block
        recovered = (
            _CONSUMER_ERROR in said and _BROKER_STALL.match(last) and _RESTARTED in after[:2000]
        )
        if not recovered:
            found.append(f"{said}\n{chain[:3000]}")
        said, chain = tail, ""
    return found
