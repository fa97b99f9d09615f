"""Every example in examples/quantum runs as a user would run it and prints what it promises."""

from __future__ import annotations

from collections.abc import Callable


def test_sample_random_circuits(run_example: Callable[[str], str]) -> None:
    out = run_example("quantum/sample_random_circuits.py")
    assert "sampled 12 circuits; shots per circuit: [500]" in out


def test_shared_observable(run_example: Callable[[str], str]) -> None:
    out = run_example("quantum/shared_observable.py")
    assert "<sum ZZ>: [3.0, 1.5," in out
    assert "matches exact: True" in out


def test_vqe(run_example: Callable[[str], str]) -> None:
    out = run_example("quantum/vqe.py")
    assert "exact ground -1.4142" in out
    assert "converged: True" in out


def test_drop_in_primitives(run_example: Callable[[str], str]) -> None:
    out = run_example("quantum/drop_in_primitives.py")
    assert "sampler identical to Aer's: True" in out
    assert "estimator identical to Aer's: True" in out
