"""Pattern 8: puts "Running..." into queue argv[1] every 50 ms, forever."""
import sys
import time

from corral import Queue

q = Queue(sys.argv[1])
while True:
    q.put("Running...")
    time.sleep(0.05)
