"""The multiprocessing drop-in (issue 16), corral against multiprocessing in one run.

Usage: dropin.py map|process REPEATS   ($CORRAL_SOCKET set)
  map:     Pool(4).map(square, range(100_000)), default chunks
  process: start + join of a trivial Process (multiprocessing: the spawn context)
Prints {"corral_ms": best of REPEATS, "multiprocessing_ms": best of REPEATS}.

Where corral's map time goes (release corrald, 2 busy cores, December 2026). Each
repeat makes a new Pool, so it pays for four worker interpreters starting and one map:
- Start-up, ~120-150 ms of a ~160-190 ms repeat: each worker is a fresh Python (site
  ~23 ms with this machine's .pth files, cloudpickle ~10 ms, corral._worker ~6 ms:
  `python3 -X importtime -E -B -c "import corral._worker, cloudpickle"`). corrald spawns
  them one after another (vfork + exec, a millisecond each; all four start within
  10-30 ms, by /proc/PID/stat start times), and feeds a worker its first chunk as soon
  as that one is spawned, not once all are. multiprocessing forks its workers: ~0.
- A warm map (a Pool reused), ~35-60 ms: CPU per map 14 ms in the parent (pickling 16
  chunks, one pool_append of ~500 KB, base64 + unpickling ~1.3 MB of answers), ~15 ms
  in the four workers, and corrald's (below). Measured by reading utime+stime in
  /proc/PID/stat of corrald and the workers around 20 maps, and `time.process_time()`
  in the parent.
- corrald, per warm map: 12-21 ms CPU before schema 3, three quarters of it in SQLite
  seeking the WITHOUT ROWID pool_items table (sqlite3BtreeIndexMoveto -> accessPayload
  reading whole 40-150 KB rows, overflow pages and all; it grew with the finished jobs
  kept), found with `perf record --call-graph dwarf -p $(pidof corrald)`; 8-9.5 ms
  since, however many finished jobs are kept.
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
