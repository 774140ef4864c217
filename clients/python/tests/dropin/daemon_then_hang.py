# A parent that starts a daemon child, reports both pids, then waits to be killed.
import os
import sys
import time

from corral import Process


def forever(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(1)


p = Process(target=forever, args=(sys.argv[1],), daemon=True)
p.start()
print(os.getpid(), flush=True)
while True:
    time.sleep(1)
