"""A corral stream-mode worker: one integer per input line, its square per output line.

It reads whatever input has arrived, answers all of it in one write, and flushes: the
answers of a batch go back together, and nothing waits in a buffer while corrald waits
for it. (The plain form, `for line in sys.stdin: print(f(line), flush=True)`, works too,
with one write per item.)
"""
import os
import sys

out = sys.stdout.buffer
pending = b""
while True:
    chunk = os.read(0, 1 << 16)
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\n")
    if lines:
        out.write(b"".join(b"%d\n" % (int(line) ** 2) for line in lines))
        out.flush()
