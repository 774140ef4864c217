"""The clients and the checks of scripts/stress (run it through scripts/stress).

Modes: the orchestrator (default), `http-worker HOST PORT N SECONDS` and
`sock-worker PATH N SECONDS`. A worker opens its connections, holds them for SECONDS
while noting what corrald does with them, and prints one JSON line of counts.
Loopback and the temp dir's socket only; every loop is bounded in count and time.
"""

import argparse
import collections
import errno
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PER_WORKER = 5000


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def http_worker(host, port, n, seconds):
    """N connections; the odd ones send half a request, the even ones nothing."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    counts = {"opened": 0, "connect_failed": 0, "refused_503": 0, "closed_by_server": 0}
    half = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: "

    def open_one(slow):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            counts["connect_failed"] += 1
            s.close()
            return
        counts["opened"] += 1
        sel.register(s, selectors.EVENT_WRITE, slow)

    for i in range(n):
        open_one(i % 2 == 1)
    deadline = time.monotonic() + seconds
    # A closed connection is opened again (at most once a second per slot), as an
    # attacker would: the load lasts the whole run, not one header timeout.
    reopen = collections.deque()
    while time.monotonic() < deadline:
        now = time.monotonic()
        while reopen and reopen[0][0] <= now:
            open_one(reopen.popleft()[1])
        for key, events in sel.select(timeout=0.2):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    counts["connect_failed"] += 1
                    sel.unregister(s)
                    s.close()
                    reopen.append((time.monotonic() + 1.0, key.data))
                    continue
                if key.data:
                    try:
                        s.send(half)
                    except OSError:
                        pass
                sel.modify(s, selectors.EVENT_READ, key.data)
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 503"):
                counts["refused_503"] += 1
            else:
                counts["closed_by_server"] += 1
            sel.unregister(s)
            s.close()
            reopen.append((time.monotonic() + 1.0, key.data))
    counts["still_open"] = len(sel.get_map())
    print(json.dumps(counts), flush=True)


def sock_worker(path, n, seconds):
    """N control connections, each says hello, then holds its connection idle."""
    raise_nofile()
    counts = {"connected": 0, "busy": 0, "lost": 0}
    held = []
    hello = b'{"id":1,"op":"hello","version":1}\n'
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(path)
            s.sendall(hello)
            line = s.makefile("rb").readline()
            reply = json.loads(line) if line else {}
        except (OSError, ValueError):
            counts["lost"] += 1
            s.close()
            continue
        if "error" in reply:
            code = reply["error"].get("code")
            counts["busy" if code == "busy" else "lost"] += 1
            s.close()
            continue
        counts["connected"] += 1
        held.append(s)
    time.sleep(max(0.0, seconds))
    print(json.dumps(counts), flush=True)


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orchestrate(args):
    raise_nofile()
    bindir = os.path.abspath(args.bin)
    corrald, corralctl = os.path.join(bindir, "corrald"), os.path.join(bindir, "corralctl")
    for b in (corrald, corralctl):
        if not os.path.exists(b):
            sys.exit(f"stress: {b} is missing: build it (scripts/stress builds unless --no-build)")
    tmp = tempfile.mkdtemp(prefix="corral-stress-")
    units, sock = os.path.join(tmp, "units"), os.path.join(tmp, "corral.sock")
    os.makedirs(units)
    with open(os.path.join(units, "crashy.toml"), "w") as f:
        f.write('command = ["sh", "-c", "echo crash; exit 1"]\nrestart = "always"\n'
                'restart_delay = "200ms"\nrestart_delay_max = "200ms"\n'
                'start_limit_burst = 1000000\nstart_limit_interval = "1s"\n')
    with open(os.path.join(units, "svc.toml"), "w") as f:
        f.write('command = ["sleep", "100000"]\n')
    port = free_port()
    procs = []
    daemon = subprocess.Popen(
        [corrald, "--units", units, "--state", os.path.join(tmp, "state"), "--socket", sock,
         "--http", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "corrald.stderr"), "w"))

    def ctl(*a, timeout=10):
        return subprocess.run([corralctl, "--socket", sock, *a], capture_output=True,
                              text=True, timeout=timeout)

    def unit(name):
        out = ctl("--json", "status", name)
        return json.loads(out.stdout)["units"][0]["instances"][0]

    failures = []
    try:
        deadline = time.monotonic() + 30
        while ctl("status").returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                sys.exit("stress: corrald did not start; see " + tmp)
            time.sleep(0.1)
        while unit("svc")["state"] != "running":
            time.sleep(0.1)
        svc_pid = unit("svc")["pid"]
        start_restarts = unit("crashy")["restarts"]
        base = proc_status(daemon.pid)
        hold = args.seconds + 5
        me = os.path.abspath(__file__)
        left = args.http
        while left > 0:
            n = min(PER_WORKER, left)
            left -= n
            procs.append(("http", subprocess.Popen(
                [sys.executable, me, "http-worker", "127.0.0.1", str(port), str(n), str(hold)],
                stdout=subprocess.PIPE, text=True)))
        left = args.sock
        while left > 0:
            n = min(PER_WORKER, left)
            left -= n
            procs.append(("sock", subprocess.Popen(
                [sys.executable, me, "sock-worker", sock, str(n), str(hold)],
                stdout=subprocess.PIPE, text=True)))
        # A connection of root's own, held open: the status op's time inside corrald,
        # apart from the start-up of a corralctl process on a loaded machine.
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.settimeout(10)
        held.connect(sock)
        held_reader = held.makefile("rb")
        held.sendall(b'{"id":0,"op":"hello","version":1}\n')
        held_reader.readline()
        op_slowest, op_id = 0.0, 0
        peak_fds, slowest, slow, slow_at = base.get("fds", 0), 0.0, 0, []
        begin = time.monotonic()
        end = begin + args.seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                ok = ctl("status", timeout=5).returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
            took = time.monotonic() - t0
            slowest = max(slowest, took)
            if not ok:
                failures.append("corralctl status failed")
            elif took > 1.0:
                slow += 1
                slow_at.append(round(t0 - begin, 1))
            op_id += 1
            t1 = time.monotonic()
            try:
                held.sendall(b'{"id":%d,"op":"status"}\n' % op_id)
                held_reader.readline()
                op_slowest = max(op_slowest, time.monotonic() - t1)
            except OSError as e:
                failures.append(f"the status op on a held connection failed: {e}")
            peak_fds = max(peak_fds, proc_status(daemon.pid).get("fds", 0))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        crashy, svc = unit("crashy"), unit("svc")
        final = proc_status(daemon.pid)
        results = {"http": {}, "sock": {}}
        for kind, p in procs:
            out, _ = p.communicate(timeout=hold + 60)
            for k, v in json.loads(out.strip().splitlines()[-1]).items():
                results[kind][k] = results[kind].get(k, 0) + v
        procs = []
        after = proc_status(daemon.pid)
        if slow:
            failures.append(f"{slow} status call(s) took over a second, at {slow_at} s")
        if crashy["state"] == "failed" or crashy["restarts"] <= start_restarts:
            failures.append(f"the crash loop was not restarted: {crashy}")
        if svc["pid"] != svc_pid or svc["state"] != "running":
            failures.append(f"the service did not keep running: {svc}")
        print(f"corrald ({os.path.basename(bindir)} build), {args.http} HTTP connections, "
              f"{args.sock} socket clients, {args.seconds} s")
        print(f"  peak RSS (VmHWM): {final.get('VmHWM', 0) / 1024:.1f} MiB "
              f"(at start {base.get('VmHWM', 0) / 1024:.1f} MiB)")
        print(f"  descriptors: {base.get('fds')} at start, peak {peak_fds}, "
              f"{after.get('fds')} once the clients left")
        print(f"  HTTP: {results['http']}")
        print(f"  socket: {results['sock']} (busy: refused by max_connections)")
        print(f"  root's corralctl status: slowest {slowest * 1000:.0f} ms, "
              f"{slow} over a second; load average {open('/proc/loadavg').read().split()[0]}")
        print(f"  the status op on a held root connection: slowest {op_slowest * 1000:.0f} ms")
        print(f"  crashy restarts during the run: {crashy['restarts'] - start_restarts}, "
              f"state {crashy['state']}; svc pid {svc['pid']} ({svc['state']})")
        for f in failures:
            print(f"FAILED: {f}")
        return 1 if failures else 0
    finally:
        for _, p in procs:
            p.kill()
            p.wait()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "http-worker":
        host, port, n, seconds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        return http_worker(host, port, n, seconds)
    if len(sys.argv) > 1 and sys.argv[1] == "sock-worker":
        return sock_worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    p = argparse.ArgumentParser(description="run through scripts/stress")
    p.add_argument("--bin", required=True)
    p.add_argument("--http", type=int, default=20000)
    p.add_argument("--sock", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=30)
    sys.exit(orchestrate(p.parse_args()))


if __name__ == "__main__":
    main()
