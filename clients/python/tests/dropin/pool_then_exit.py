# A parent whose pool job never ends: once its worker runs the item, prints the job's id,
# then either exits normally without close() or join() once it reads a line ("exit"), or
# waits to be killed ("hang").
import os
import sys
import time

from corral import Pool


def forever(pidfile):
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pidfile + ".tmp", pidfile)
    time.sleep(3600)


if __name__ == "__main__":
    how, pidfile = sys.argv[1], sys.argv[2]
    pool = Pool(1)
    result = pool.map_async(forever, [pidfile])
    deadline = time.monotonic() + 120
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(result.jobs[0], flush=True)
    if how == "hang":
        time.sleep(3600)
    sys.stdin.readline()
