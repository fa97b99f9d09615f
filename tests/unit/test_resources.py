"""Targets and capacities become exact integers; malformed ones are clear errors."""

from __future__ import annotations

import pytest

from qsrv._resources import (
    SCALE,
    display,
    fits,
    normalize,
    normalize_target,
    parse_memory,
    parse_resource_list,
)
from qsrv.errors import ConfigError


def test_default_is_one_cpu_and_explicit_cpu_replaces_it() -> None:
    assert normalize_target(None) == {"cpu": SCALE}
    assert normalize_target({"gpu": 1}) == {"cpu": SCALE, "gpu": SCALE}
    assert normalize_target({"cpu": 0, "gpu": 1}) == {"gpu": SCALE}


def test_fractions_are_exact() -> None:
    parts = [normalize_target({"cpu": 0, "gpu": 0.1})["gpu"] for _ in range(10)]
    assert sum(parts) == SCALE  # 0.1 * 10 is exactly one GPU, unlike floats


@pytest.mark.parametrize("text, expected", [
    ("8GB", 8 * 10**9), ("8 GiB", 8 * 2**30), ("512MiB", 512 * 2**20), ("1.5G", 1.5e9),
    ("100", 100), ("2tb", 2 * 10**12), ("64Ki", 64 * 1024),
])
def test_memory_units(text: str, expected: float) -> None:
    assert parse_memory(text) == int(expected)


def test_mem_alias_is_gib() -> None:
    assert normalize_target({"cpu": 2, "mem": 8}) == {"cpu": 2 * SCALE, "memory": 8 * 2**30}
    with pytest.raises(ConfigError, match="not both"):
        normalize_target({"mem": 1, "memory": "1GB"})


@pytest.mark.parametrize("target, message", [
    ({"cpu": -1}, ">= 0"),
    ({"cpu": "2"}, "must be a number"),
    ({"cpu": True}, "must be a number"),
    ({"gpu": float("inf")}, "finite"),
    ({"memory": "lots"}, "cannot read"),
    ({"memory": "8 parsecs"}, "unknown memory unit"),
    ({"memory": "8XB"}, "unknown memory unit"),
    ({"gpu": 1.5}, "whole number"),
    ({"": 1}, "invalid resource name"),
    ({"has space": 1}, "invalid resource name"),
    ([("cpu", 1)], "must be a mapping"),
])
def test_malformed_targets(target: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        normalize_target(target)  # type: ignore[arg-type]


def test_any_tag_is_a_custom_resource() -> None:
    assert normalize_target({"qpu": 1, "ibm:eagle/r3": 0.5}) == {
        "cpu": SCALE, "qpu": SCALE, "ibm:eagle/r3": SCALE // 2}


def test_command_line_resource_list() -> None:
    assert parse_resource_list("qpu=1, aer=0.5,") == {"qpu": 1.0, "aer": 0.5}
    with pytest.raises(ConfigError, match="NAME=AMOUNT"):
        parse_resource_list("qpu")
    with pytest.raises(ConfigError, match="not a number"):
        parse_resource_list("qpu=lots")


def test_fit_and_display() -> None:
    free = normalize({"cpu": 2, "memory": "4GB", "qpu": 1})
    assert fits(normalize_target({"cpu": 2, "qpu": 1}), free)
    assert not fits(normalize_target({"cpu": 2.5}), free)
    assert not fits(normalize_target({"gpu": 1}), free)
    assert display(free) == {"cpu": 2.0, "memory": "3.7 GiB", "qpu": 1.0}
