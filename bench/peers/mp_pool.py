"""The multiprocessing.Pool side of corral's pool benchmark.

Usage: mp_pool.py ITEMS CHUNKSIZE   (CHUNKSIZE 0 = Pool.map's default)
Prints {"items": N, "seconds": S}.
"""
import json
import sys
import time
from multiprocessing import Pool


def square(n):
    return n * n


def main():
    items, chunksize = int(sys.argv[1]), int(sys.argv[2])
    with Pool(4) as pool:
        start = time.perf_counter()
        if chunksize:
            result = pool.map(square, range(items), chunksize=chunksize)
        else:
            result = pool.map(square, range(items))
        elapsed = time.perf_counter() - start
    assert result[-1] == (items - 1) ** 2
    print(json.dumps({"items": items, "seconds": elapsed}))


if __name__ == "__main__":
    main()
