#!/usr/bin/env python3
"""Pattern 5, "Process Pools": a stream worker for `corralctl pool map --stream`.

Each worker is one long-lived process: it reads one number per line on stdin and answers
its square on one line of stdout (flushed, so the answer is not held in a buffer).

    corralctl pool map -j 4 --stream -- python3 examples/square.py ::: 1 2 3 4 5
"""
import sys

for line in sys.stdin:
    print(int(line) ** 2, flush=True)
