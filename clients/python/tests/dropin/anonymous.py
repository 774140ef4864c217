# Makes anonymous objects, uses them from a child, prints their names, and exits.
from corral import Array, Process, Queue, Value


def work(q, v, a):
    q.put("x")
    v.value = 5
    a[0] = 1.5


q = Queue()
v = Value("i", 0)
a = Array("d", 3)
p = Process(target=work, args=(q, v, a))
p.start()
p.join()
print(q.get(), v.value, a[:])
print(q.name, v.name, a.name)
