"""bench.worker_logs: a job's traceback fails a benchmark; a broker stall the consumer
restarted from does not."""

from __future__ import annotations

from bench.worker_logs import failures

STALL = """[2026-12-05 16:01:02] [PID 7] [Thread-3] [dramatiq.worker.ConsumerThread(journeyline)] \
[CRITICAL] Consumer encountered an unexpected error.
Traceback (most recent call last):
  File "/x/dramatiq/worker.py", line 310, in run
    message = next(self.consumer)
  File "/x/redis/connection.py", line 512, in read_response
    raise TimeoutError(f"Timeout reading from {host_error}")
redis.exceptions.TimeoutError: Timeout reading from 127.0.0.1:6379
[2026-12-05 16:01:02] [PID 7] [Thread-3] [dramatiq.worker.ConsumerThread(journeyline)] \
[INFO] Restarting consumer in 3.00 seconds.
"""
JOB_FAILED = """[2026-12-05 16:01:05] [PID 7] [Thread-9] [engine.actions] [ERROR] email raised
Traceback (most recent call last):
  File "/x/engine/actions.py", line 201, in _call
    result = claimed.call()
KeyError: 'x-message-id'
"""


def test_a_broker_stall_the_consumer_restarted_from_is_not_a_failure() -> None:
    assert failures("starting\n" + STALL + "done\n") == []


def test_a_job_that_raised_is_a_failure() -> None:
    (failed,) = failures(STALL + JOB_FAILED)
    assert "KeyError: 'x-message-id'" in failed
    assert "[engine.actions] [ERROR] email raised" in failed


def test_a_stall_never_restarted_from_is_a_failure() -> None:
    unrecovered = STALL.rsplit("[2026-12-05 16:01:02]", 1)[0]
    assert len(failures(unrecovered)) == 1


def test_a_log_without_tracebacks_has_no_failures() -> None:
    assert failures("all good\nno errors\n") == []


def test_a_chained_stall_is_judged_by_its_last_exception() -> None:
    chained = STALL.replace(
        "Traceback (most recent call last):\n",
        'Traceback (most recent call last):\n  File "/x/socket.py", line 1, in recv\n'
        "TimeoutError: timed out\n\nDuring handling of the above exception, another "
        "exception occurred:\n\nTraceback (most recent call last):\n",
        1,
    )
    assert chained.count("Traceback") == 2
    assert failures(chained) == []
    assert len(failures(chained + JOB_FAILED)) == 1
