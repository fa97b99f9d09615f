"""``qsrv platforms``: the quantum platforms a gateway's cluster offers."""

from __future__ import annotations

import argparse
import dataclasses
import json

from qsrv.cli._gateway_common import add_client_options, client_from_args, print_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "platforms", help="quantum platforms: engines, limits, availability",
        description="The platforms the gateway's cluster offers (from what its workers can "
                    "simulate): name, limits, hardware and availability.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(parser)
    parser.set_defaults(func=_platforms)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.0f} GiB"


def _platforms(args: argparse.Namespace) -> int:
    platforms = client_from_args(args).platforms()
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in platforms], indent=2))
        return 0
    rows = []
    for p in platforms:
        hw = p.hardware
        hardware = f"{hw.vcpus} vCPU, {_gib(hw.ram_bytes)}"
        if hw.gpus:
            hardware += f", {hw.gpus} GPU ({_gib(hw.vram_bytes)})"
        rows.append([p.name, p.version, p.max_qubits, p.max_shots, p.max_circuits,
                     p.availability, p.workers, hardware])
    print_table(["PLATFORM", "VERSION", "QUBITS", "SHOTS", "CIRCUITS", "AVAILABILITY",
                 "WORKERS", "HARDWARE"], rows)
    return 0
