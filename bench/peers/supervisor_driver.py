"""The supervisord side of corral's supervision benchmarks.

Usage: supervisor_driver.py SOCKET

Talks XML-RPC to a running supervisord over its unix_http_server socket, and does the
timing itself so that no Python process is started per poll. Once supervisord answers
it prints {"pid": PID} (supervisord's own pid), then reads one command per line on
stdin and prints one JSON line per command ({"error": "..."} when it failed):

  spawn GROUP N POLL_MS    startProcessGroup(GROUP, wait=True), then getAllProcessInfo
                           every POLL_MS until the N processes of GROUP are RUNNING
                           -> {"seconds": S, "call_seconds": the RPC alone}
  stop GROUP N POLL_MS     stopProcessGroup(GROUP, wait=True), then getAllProcessInfo
                           every POLL_MS until the N processes are STOPPED
                           -> {"seconds": S, "call_seconds": the RPC alone}
  start NAME               startProcess(NAME, wait=True) -> {"ok": true}
  stopone NAME             stopProcess(NAME, wait=True) -> {"ok": true}
  restart NAME K POLL_MS   K times: SIGKILL NAME's pid, then getProcessInfo(NAME) every
                           POLL_MS until it is RUNNING with another pid
                           -> {"ms": [latency of each kill]}
  quit
"""
import http.client
import json
import os
import signal
import socket
import sys
import time
import xmlrpc.client

TIMEOUT = 60.0


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        self.sock = s


class _UnixTransport(xmlrpc.client.Transport):
    """Used when the `supervisor` package is not importable by this python3."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        conn = _UnixHTTPConnection(self.path)
        self._connection = host, conn
        return conn


def connect(sock):
    try:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, "unix://" + sock)
    except ImportError:
        transport = _UnixTransport(sock)
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def check(results):
    """startProcessGroup/stopProcessGroup return one status per process; 80 = SUCCESS."""
    bad = [r for r in results if r.get("status") != 80]
    if bad:
        raise RuntimeError("%d failed, first: %s" % (len(bad), bad[0]))


def wait_group(sup, group, n, state, poll, start):
    while True:
        infos = [i for i in sup.getAllProcessInfo() if i["group"] == group]
        if len(infos) == n and all(i["statename"] == state for i in infos):
            return
        if time.perf_counter() - start > TIMEOUT:
            raise RuntimeError("%s: not all %d %s within %ds" % (group, n, state, TIMEOUT))
        time.sleep(poll)


def running_pid(sup, name, poll, old=None):
    start = time.perf_counter()
    while True:
        info = sup.getProcessInfo(name)
        if info["statename"] == "RUNNING" and info["pid"] not in (0, old):
            return info["pid"]
        if time.perf_counter() - start > TIMEOUT:
            raise RuntimeError("%s not running within %ds (%s)" % (name, TIMEOUT, info["statename"]))
        time.sleep(poll)


def command(sup, words):
    op, args = words[0], words[1:]
    if op in ("spawn", "stop"):
        method, state = {
            "spawn": (sup.startProcessGroup, "RUNNING"),
            "stop": (sup.stopProcessGroup, "STOPPED"),
        }[op]
        group, n, poll = args[0], int(args[1]), float(args[2]) / 1000
        t = time.perf_counter()
        check(method(group, True))
        call = time.perf_counter() - t
        wait_group(sup, group, n, state, poll, t)
        return {"seconds": time.perf_counter() - t, "call_seconds": call}
    if op == "start":
        sup.startProcess(args[0], True)
        return {"ok": True}
    if op == "stopone":
        sup.stopProcess(args[0], True)
        return {"ok": True}
    if op == "restart":
        name, k, poll = args[0], int(args[1]), float(args[2]) / 1000
        ms = []
        for _ in range(k):
            old = running_pid(sup, name, poll)
            t = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            running_pid(sup, name, poll, old)
            ms.append((time.perf_counter() - t) * 1000)
        return {"ms": ms}
    raise ValueError("unknown command %r" % op)


def main():
    start = time.perf_counter()
    while True:
        # A fresh connection each try: a transport that failed to connect stays broken.
        sup = connect(sys.argv[1])
        try:
            if sup.getState()["statename"] == "RUNNING":
                break
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            pass
        if time.perf_counter() - start > TIMEOUT:
            sys.exit("supervisord did not answer on %s within %ds" % (sys.argv[1], TIMEOUT))
        time.sleep(0.02)
    print(json.dumps({"pid": sup.getPID()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            reply = command(sup, words)
        except Exception as e:  # reported to the harness, which marks the series failed
            reply = {"error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
