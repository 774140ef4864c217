# 4 processes x 250 locked float additions of one shared Value('d') and Array('d').
from corral import Array, Process, Value


def add(v, a, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 0.25
        with a.get_lock():
            a[1] += 0.5


v = Value("d", 0.0)
a = Array("d", [0.0, 0.0, 1.5])
ps = [Process(target=add, args=(v, a, 250)) for _ in range(4)]
for p in ps:
    p.start()
for p in ps:
    p.join()
print(v.value, a[:], a[1:], [p.exitcode for p in ps])
