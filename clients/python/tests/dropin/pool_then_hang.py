# A parent whose pool job never ends: prints the job's id, then waits to be killed.
import time

from corral import Pool


def forever(x):
    time.sleep(3600)


pool = Pool(1)
result = pool.map_async(forever, [1])
print(result.jobs[0], flush=True)
while True:
    time.sleep(1)
