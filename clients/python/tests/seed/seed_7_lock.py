from corral import Process, Lock

lock = Lock()

def task(n):
    with lock:  # Ensures only one process accesses this section at a time
        print(f"Task {n} executing")

processes = [Process(target=task, args=(i,)) for i in range(3)]
for p in processes:
    p.start()
for p in processes:
    p.join()
