"""Sleeps argv[1] seconds (a float), then prints argv[2]."""
import sys
import time

time.sleep(float(sys.argv[1]))
print(sys.argv[2])
