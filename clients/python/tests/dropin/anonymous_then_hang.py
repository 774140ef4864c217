# Makes anonymous objects of every kind, starts a child that uses them and hangs, prints
# the objects' names and the child's pid, then hangs itself (until killed with -9).
import sys
import time

from corral import Array, BoundedSemaphore, Event, JoinableQueue, Process, Queue, Value


def child(q, v, a, s, e, pidfile):
    import os

    q.put("from the child")
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(1000)


if __name__ == "__main__":
    q, jq = Queue(), JoinableQueue()
    v, a = Value("d", 0.5), Array("i", 3)
    s, e = BoundedSemaphore(2), Event()
    q.put(1)
    jq.put(2)
    p = Process(target=child, args=(q, v, a, s, e, sys.argv[1]))
    p.start()
    print(q.name, jq.name, jq.name + ".unfinished", v.name, a.name, s.name, e.name, flush=True)
    time.sleep(1000)
