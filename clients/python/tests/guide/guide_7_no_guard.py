from corral import Process, Queue, Pool

def f(q, x):
    q.put(x * x)

q = Queue()
ps = [Process(target=f, args=(q, x)) for x in range(4)]
for p in ps:
    p.start()
for p in ps:
    p.join()
print(sorted(q.get() for _ in ps))
with Pool(2) as pool:
    print(pool.map(abs, [-1, -2, 3]))
