from corral import Process
import time

def background_task():
    while True:
        print("Running...")
        time.sleep(1)

p = Process(target=background_task, daemon=True)
p.start()
time.sleep(3)  # Main process ends, daemon process stops
