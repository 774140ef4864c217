# Starts a child that waits on an event, prints the child's unit and pid, then waits
# for a line on stdin before it lets the child finish.
import sys

from corral import Event, Process


def child(e):
    e.wait(120)


if __name__ == "__main__":
    e = Event()
    p = Process(target=child, args=(e,))
    p.start()
    print(p.unit, p.pid, flush=True)
    sys.stdin.readline()
    e.set()
    p.join()
    print(p.exitcode, flush=True)
