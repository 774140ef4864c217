import os
import queue
import signal
import sys
import time

from corral import (JoinableQueue, Pipe, Pool, Process, Queue, RLock, SimpleQueue,
                    TimeoutError, active_children, cpu_count, current_process,
                    get_context, parent_process, set_start_method)


def who(parent_pid):
    parent = parent_process()
    print(current_process().name, parent.name, parent.pid == parent_pid,
          repr(sys.stdin.read()), flush=True)


def consume(q):
    while True:
        item = q.get()
        if item is None:
            q.task_done()
            return
        print('consumed', item, flush=True)
        q.task_done()


def sleeper(seconds):
    time.sleep(seconds)


def late():
    time.sleep(0.5)
    print('late child done', flush=True)


def square(x):
    return x * x


def fail(x):
    raise KeyError(x)


if __name__ == '__main__':
    set_start_method('spawn', force=True)
    print(cpu_count() == os.cpu_count(), current_process().name, parent_process(), flush=True)

    p = get_context('spawn').Process(target=who, args=(os.getpid(),), name='who')
    p.start()
    p.join()
    print(p.exitcode, flush=True)

    s = Process(target=sleeper, args=(60,))
    s.start()
    s.join(0.1)
    print(s.is_alive(), s.exitcode, [c is s for c in active_children()], flush=True)
    s.terminate()
    s.join()
    print(s.is_alive(), s.exitcode == -signal.SIGTERM, active_children(), flush=True)
    s.close()
    try:
        s.pid
    except ValueError:
        print('closed', flush=True)

    sq = SimpleQueue()
    print(sq.empty(), flush=True)
    sq.put([1, 'two'])
    print(sq.get(), sq.empty(), flush=True)

    bounded = Queue(maxsize=1)
    bounded.put('a')
    try:
        bounded.put_nowait('b')
    except queue.Full:
        print('full', bounded.get(), flush=True)

    jq = JoinableQueue()
    c = Process(target=consume, args=(jq,))
    c.start()
    for item in ['x', 'y', 'z', None]:
        jq.put(item)
    jq.join()
    print('all tasks done', flush=True)
    c.join()

    lock = RLock()
    with lock:
        with lock:
            print('re-entered', flush=True)

    reader, writer = Pipe(duplex=False)
    writer.send({'k': 1})
    print(reader.recv(), flush=True)
    try:
        reader.send(1)
    except OSError:
        print('read-only', flush=True)

    called = []
    with Pool(2) as pool:
        print(list(pool.imap(square, range(5))), flush=True)
        print(sorted(pool.imap_unordered(square, range(5), chunksize=2)), flush=True)
        r = pool.starmap_async(pow, [(2, 3), (3, 2)], callback=called.append)
        print(r.get(timeout=60), r.ready(), r.successful(), called, flush=True)
        e = pool.apply_async(fail, (7,), error_callback=lambda exc: called.append(repr(exc)))
        e.wait(60)
        print(e.ready(), e.successful(), called[-1], flush=True)
        slow = pool.apply_async(sleeper, (2,))
        try:
            slow.get(timeout=0.01)
        except TimeoutError:
            print('timed out', flush=True)
        print(slow.get(timeout=60), flush=True)

    pool = Pool(2)
    r = pool.map_async(square, range(3))
    pool.close()
    pool.join()
    print(r.ready(), r.get(), flush=True)

    Process(target=late).start()
    print('end', flush=True)
