"""The multiprocessing drop-in (issue 16), corral against multiprocessing in one run.

Usage: dropin.py map|process REPEATS   ($CORRAL_SOCKET set)
  map:     Pool(4).map(square, range(100_000)), default chunks
  process: start + join of a trivial Process (multiprocessing: the spawn context)
Prints {"corral_ms": best of REPEATS, "multiprocessing_ms": best of REPEATS}.
"""
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import corral  # noqa: E402


def square(x):
    return x * x


def nothing():
    pass


def best_ms(action, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main():
    kind, repeats = sys.argv[1], int(sys.argv[2])
    spawn = multiprocessing.get_context("spawn")
    if kind == "map":
        def ours():
            with corral.Pool(4) as pool:
                assert pool.map(square, range(100_000))[-1] == 99_999 ** 2

        def theirs():
            with multiprocessing.Pool(4) as pool:
                assert pool.map(square, range(100_000))[-1] == 99_999 ** 2
    else:
        def ours():
            p = corral.Process(target=nothing)
            p.start()
            p.join()
            assert p.exitcode == 0

        def theirs():
            p = spawn.Process(target=nothing)
            p.start()
            p.join()
            assert p.exitcode == 0
    print(json.dumps({"corral_ms": best_ms(ours, repeats), "multiprocessing_ms": best_ms(theirs, repeats)}))


if __name__ == "__main__":
    main()
