"""Pattern 8's main program: starts a daemon Process, sees it run, then exits.

Prints the daemon's unit name. Its exit must stop the daemon (multiprocessing's rule).
"""
import os
import sys

from corral import Process, Queue

queue_name = sys.argv[1]
p = Process([sys.executable, os.path.join(os.path.dirname(__file__), "background.py"), queue_name],
            daemon=True)
p.start()
Queue(queue_name).get(timeout=60)  # it is running
print(p.name, flush=True)
