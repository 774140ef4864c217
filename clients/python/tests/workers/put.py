"""Pattern 4: puts argv[2] (a string) into the queue named argv[1]."""
import sys

from corral import Queue

Queue(sys.argv[1]).put(sys.argv[2])
