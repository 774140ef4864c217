"""Fails for input 3 (exit 3, a message on stderr); prints the input otherwise."""
import sys

n = int(sys.argv[1])
if n == 3:
    print("cannot handle %d" % n, file=sys.stderr)
    sys.exit(3)
print(n)
