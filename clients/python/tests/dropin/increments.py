# 10 processes x 1,000 locked increments of one shared Value.
from corral import Process, Value


def add(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


v = Value("i", 0)
ps = [Process(target=add, args=(v, 1000)) for _ in range(10)]
for p in ps:
    p.start()
for p in ps:
    p.join()
print(v.value, [p.exitcode for p in ps])
