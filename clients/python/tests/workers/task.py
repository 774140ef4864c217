"""Pattern 2: prints its number."""
import sys

print("Task %s running" % sys.argv[1])
