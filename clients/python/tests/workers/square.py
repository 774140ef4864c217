"""Pattern 5, exec mode: prints the square of argv[1]."""
import sys

print(int(sys.argv[1]) ** 2)
