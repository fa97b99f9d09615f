"""``qsrv start``: a local cluster kept running in the background for this OS user."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from qsrv._local_cluster import RunningCluster, start_background, state_dir, stop_background
from qsrv._resources import parse_resource_list
from qsrv._retry import poll_until
from qsrv.cli.status import fetch_status
from qsrv.errors import ConfigError, ConnectionLostError, QsrvError

_READY_TIMEOUT = 60.0


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "start", help="start a local cluster in the background, shared by this user's scripts",
        description="Start a scheduler and one worker agent on this machine, in the background, "
                    "for this OS user, on a private Unix socket (its directory: "
                    "$XDG_RUNTIME_DIR/qsrv, else /tmp/qsrv-UID, mode 0700, with the token). "
                    "Until `qsrv stop`, qsrv.init() with no address (and no QSRV_ADDRESS) "
                    "joins it instead of starting a cluster of its own, so scripts start "
                    "fast and share the cores and one object store; init() with sizes "
                    "(num_cpus=...) or gateway=True still starts its own. Started twice, it "
                    "says that it runs. Modules that tasks import by name must be importable "
                    "where `qsrv start` runs (its directory or PYTHONPATH); functions of a "
                    "script itself travel by value.")
    p.add_argument("--cpus", type=float, default=None, help="CPUs to offer (default: all cores)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs to offer (default: the NVIDIA GPUs detected)")
    p.add_argument("--memory", default=None,
                   help="memory to offer, e.g. 8GB (default: the machine's)")
    p.add_argument("--resources", default="",
                   help="custom resources, e.g. qpu=1,aer=1 (fractions allowed)")
    p.add_argument("--object-store-memory", default=None,
                   help="capacity of the shared-memory object store, e.g. 4GB (default: 30%% "
                        "of the memory offered, at most what /dev/shm holds)")
    p.add_argument("--json", action="store_true",
                   help="print the cluster's description as JSON (address, pids, options)")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    if args.cpus is not None and args.cpus <= 0:
        raise ConfigError(f"--cpus must be > 0, got {args.cpus}")
    if args.gpus is not None and args.gpus < 0:
        raise ConfigError(f"--gpus must be >= 0, got {args.gpus}")
    return {"cpus": args.cpus, "gpus": args.gpus, "memory": args.memory,
            "resources": parse_resource_list(args.resources) or None,
            "object_store_memory": args.object_store_memory}


def _describe(cluster: RunningCluster) -> str:
    sizes = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in cluster.options.items()
                      if v is not None)
    return (f"{cluster.address} ({sizes or 'all of this machine'}; scheduler pid "
            f"{cluster.scheduler_pid}, worker pid {cluster.worker_pid})")


def _ready(cluster: RunningCluster) -> bool:
    """Whether the worker registered and has an executor up (the first task then runs at
    once); raises if a process of the cluster died."""
    if not cluster.alive():
        raise ConnectionLostError(f"the local cluster stopped while starting; see its log: "
                                  f"{cluster.log}")
    try:
        workers = fetch_status(cluster.address, cluster.token, timeout=5.0)["workers"]
    except QsrvError:
        return False
    return any(w["executors"] > 0 for w in workers)


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    cluster, started = start_background(options)
    if not started:
        asked = {k: v for k, v in options.items() if v is not None}
        differ = {k: v for k, v in asked.items() if cluster.options.get(k) != v}
        if differ:
            raise ConfigError(f"a local cluster already runs at {_describe(cluster)}, with "
                              f"other options than {asked}; `qsrv stop` it first")
        print(f"qsrv: a local cluster already runs at {_describe(cluster)}")
        return 0
    try:
        if not poll_until(lambda: _ready(cluster), _READY_TIMEOUT, interval=0.05):
            raise ConnectionLostError(f"the local cluster's worker did not register within "
                                      f"{_READY_TIMEOUT:g} s; see its log: {cluster.log}")
    except BaseException:
        stop_background()
        raise
    if args.json:
        print(json.dumps({"address": cluster.address, "tcp_address": cluster.tcp_address,
                          "scheduler_pid": cluster.scheduler_pid,
                          "worker_pid": cluster.worker_pid, "options": cluster.options,
                          "log": cluster.log, "state_dir": str(state_dir())}))
        return 0
    print(f"qsrv: local cluster started at {_describe(cluster)}")
    print("  qsrv.init() (no address) in this user's scripts joins it; `qsrv stop` stops it")
    print(f"  state and log: {os.path.dirname(cluster.log)}")
    return 0
