"""A stand-in for a Job's pod that drains its task queue (KWOK's pods run no code).

    python -m tests.worker.task_consumer RECORD [--hold-after N]

Reads the task queue the worker gave the Job (`TaskQueue.from_env`, the pod's variables) and,
for each task, writes ``processed <id>`` to RECORD, marks the task done and writes
``acked <id>``: a line per step, flushed, so what a killed process did is on record up to its
death. It ends when no task comes for a few seconds. With ``--hold-after N`` it processes N
tasks normally, then takes one more, records it as processed, says ``holding <id>`` on stdout
and waits for stdin to close, never marking it done: the test kills it there.
"""

from __future__ import annotations

import argparse
import queue
import sys

from mstc_client.tasks import TaskQueue

_IDLE_SECONDS = 5.0  # no task for this long: the queue is drained


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("record")
    parser.add_argument("--hold-after", type=int, default=None)
    args = parser.parse_args()
    done = 0
    with TaskQueue.from_env() as tasks, open(args.record, "a", buffering=1) as record:
        while True:
            try:
                task = tasks.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                return
            record.write(f"processed {task['id']}\n")
            if args.hold_after is not None and done == args.hold_after:
                print(f"holding {task['id']}", flush=True)
                sys.stdin.read()  # until killed
                return
            tasks.task_done()
            record.write(f"acked {task['id']}\n")
            done += 1


if __name__ == "__main__":
    main()
