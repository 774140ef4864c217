"""Pattern 6: adds 1 to the counter named argv[1]."""
import sys

from corral import Value

Value(sys.argv[1]).add(1)
