"""Takes the lock argv[1], says so on stdout, then holds it until killed."""
import sys
import time

from corral import Lock

lock = Lock(sys.argv[1])
lock.acquire()
print("held %d" % lock.token, flush=True)
while True:
    time.sleep(3600)
