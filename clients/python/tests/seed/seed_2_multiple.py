from corral import Process

def task(n):
    print(f"Task {n} running")

processes = []
for i in range(5):  # Create 5 processes
    p = Process(target=task, args=(i,))
    processes.append(p)
    p.start()

for p in processes:
    p.join()  # Wait for all processes to complete
