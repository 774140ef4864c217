"""Pattern 7: under the lock argv[1], prints, and reports its interval to queue argv[2]."""
import sys
import time

from corral import Lock, Queue

n = sys.argv[3]
lock = Lock(sys.argv[1])
with lock:
    start = time.monotonic()
    print("Task %s executing" % n, flush=True)
    time.sleep(0.2)  # hold the lock a while, so that overlaps would show
    end = time.monotonic()
    Queue(sys.argv[2]).put({"n": int(n), "start": start, "end": end, "token": lock.token})
