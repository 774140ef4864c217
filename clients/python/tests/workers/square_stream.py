"""Pattern 5, stream mode: one number per line on stdin, its square per line on stdout."""
import sys

for line in sys.stdin:
    print(int(line) ** 2, flush=True)
