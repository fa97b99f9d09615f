"""An executor started before it is needed: ``python -m qsrv.worker._standby``.

The agent starts it while it registers, so the Python start-up and the imports (most of an
executor's start) overlap the registration instead of following it. It waits for one line
on standard input, ``ADDRESS WORKER_ID [PID]``, and then becomes the executor of that worker
(``qsrv.worker._executor``, token in QSRV_TOKEN as always). PID, when given, is the process
the agent started (and kills when told) as the agent sees it: an executor in a sandbox of its
own has another pid inside it. End of input without a line (the agent went away, or stopped
needing it): it exits.
"""

from __future__ import annotations

import os
import sys

from qsrv.worker import _executor


def main() -> None:
    words = sys.stdin.readline().split()
    if len(words) not in (2, 3):
        return
    null = os.open(os.devnull, os.O_RDONLY)  # a task reading stdin sees what executors see
    os.dup2(null, 0)
    os.close(null)
    address, worker_id = words[:2]
    os.environ["QSRV_WORKER_ID"] = worker_id
    if len(words) == 3:
        os.environ["QSRV_EXECUTOR_PID"] = words[2]
    sys.argv[1:] = [address, worker_id]
    _executor.main()


if __name__ == "__main__":
    main()
