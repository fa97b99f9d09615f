"""qsrv in thirty seconds: tasks, refs, put/get, await, on an embedded local cluster."""

import asyncio

import numpy as np

import qsrv


@qsrv.distribute_task(target={"cpu": 1})
def simulate(seed: int, shots: int) -> dict[str, int]:
    """A stand-in for a circuit run: sample a 2-qubit distribution."""
    rng = np.random.default_rng(seed)
    outcomes = rng.choice(["00", "01", "10", "11"], size=shots, p=[0.5, 0.0, 0.0, 0.5])
    keys, counts = np.unique(outcomes, return_counts=True)
    return {str(k): int(c) for k, c in zip(keys, counts, strict=True)}


@qsrv.distribute_task
def expectation(counts: dict[str, int], weights: np.ndarray) -> float:
    shots = sum(counts.values())
    return float(sum(weights[int(k, 2)] * c for k, c in counts.items()) / shots)


def main() -> None:
    qsrv.init()  # no address: starts a scheduler and a worker with this machine's cores
    refs = [simulate(seed, 1000) for seed in range(8)]  # ObjectRefs, returned at once
    counts = qsrv.get(refs)
    print("counts of run 0:", counts[0])

    weights = qsrv.put(np.array([1.0, -1.0, -1.0, 1.0]))  # stored once, passed by ref
    values = qsrv.get([expectation(ref, weights) for ref in refs])
    print("<ZZ> per run:", [round(v, 3) for v in values])

    async def gather() -> list[float]:
        return await qsrv.get([expectation(ref, weights) for ref in refs[:2]])

    print("awaited:", [round(v, 3) for v in asyncio.run(gather())])
    qsrv.shutdown()


if __name__ == "__main__":
    main()
