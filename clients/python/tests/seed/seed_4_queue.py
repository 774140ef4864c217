from corral import Process, Queue

def worker(q):
    q.put("Data from process")

q = Queue()
p = Process(target=worker, args=(q,))
p.start()
p.join()

print(q.get())  # Output: Data from process
