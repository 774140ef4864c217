# Makes two anonymous queues, starts a child that answers on them, prints their names,
# and kills itself with -9 right after start(): the child holds the queues on its own
# (corrald made it a holder of the session before it spawned it).
import os
import signal

from corral import Process, Queue


def child(requests, answers):
    word = requests.get(timeout=120)
    answers.put(word + " back")
    requests.get(timeout=120)  # "bye"


if __name__ == "__main__":
    requests, answers = Queue(), Queue()
    p = Process(target=child, args=(requests, answers))
    p.start()
    print(requests.name, answers.name, p.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
