"""corral's Python client (clients/python) side of the benchmark (bench/src/workloads.rs),
measured against mp_manager.py in the same run.

Usage: corral_py.py WORKLOAD CLIENTS SECONDS   (WORKLOAD: queue | lock; $CORRAL_SOCKET set)
Prints one JSON object: {"ops": N, "seconds": S, "p50_us": ..., "p99_us": ...}
"""
import json
import os
import sys
import time
from multiprocessing import Process, Queue as ResultQueue

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import corral  # noqa: E402


def worker(kind, seconds, results):
    q = corral.Queue(name="bench-py")
    lock = corral.Lock(name="bench-py")
    lat = []
    ops = 0
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        if kind == "queue":
            q.put(ops)
            q.get()
        elif kind == "lock":
            lock.acquire()
            lock.release()
        lat.append(time.perf_counter() - t0)
        ops += 1
    results.put((ops, lat[:: max(1, len(lat) // 2000)]))


def main():
    kind, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    results = ResultQueue()
    procs = [Process(target=worker, args=(kind, seconds, results)) for _ in range(clients)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    got = [results.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - start
    ops = sum(o for o, _ in got)
    lat = sorted(x for _, l in got for x in l)
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6 if lat else None
    print(json.dumps({"ops": ops, "seconds": min(elapsed, seconds), "p50_us": pct(0.5), "p99_us": pct(0.99)}))


if __name__ == "__main__":
    main()
