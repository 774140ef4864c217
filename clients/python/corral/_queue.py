"""Queue: a named, durable FIFO served by corrald (``multiprocessing.Queue``)."""

import base64
import math
import pickle

from . import _anon, _client

__all__ = ["Queue"]


def timeout_ms(timeout, what="timeout"):
    """Seconds (int or float) to whole milliseconds, rounded up; None stays None."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("%s must be a number of seconds or None, not %r" % (what, timeout))
    if timeout < 0 or math.isnan(timeout):
        raise ValueError("'%s' must be a non-negative number" % what)
    if math.isinf(timeout):
        return None
    return int(math.ceil(timeout * 1000))


class Queue:
    """A named queue shared by every program that uses the same corrald.

    ``Queue("results")`` names a queue (created on first use, kept across restarts of
    corrald); ``Queue()`` makes up a unique name (``q.name``) to hand to other
    programs, e.g. on their command line. ``maxsize > 0`` declares the capacity
    (``queue_declare``): a ``put`` on a full queue then waits or raises ``queue.Full``.

    Items are JSON values: ``None``, bools, numbers, strings, lists and dicts with
    string keys (a tuple comes back as a list). ``get`` removes the item before
    answering: delivery is at most once.
    """

    def __init__(self, name=None, maxsize=0, *, socket=None, ctx=None):
        # multiprocessing's Queue(maxsize): a number first is the capacity.
        if isinstance(name, int) and not isinstance(name, bool):
            name, maxsize = None, name
        anonymous = name is None
        if anonymous:
            name = _anon.name("queue")
        if not isinstance(name, str):
            raise TypeError("queue name must be a string, not %r" % (name,))
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError("maxsize must be an int")
        self.name = name
        self._socket = socket
        self._maxsize = maxsize
        if maxsize > 0:
            self._call("queue_declare", maxsize=maxsize)
        if anonymous:
            _anon.made(self.delete)

    def _call(self, op, **fields):
        return _client.call(op, socket=self._socket, queue=self.name, **fields)

    def __repr__(self):
        return "<corral.Queue %r>" % self.name

    def __reduce__(self):
        return (Queue, (self.name,), {"_socket": self._socket, "_maxsize": self._maxsize})

    def put(self, obj, block=True, timeout=None):
        """Appends ``obj``; returns once corrald has committed it.

        On a full queue: waits for room (up to ``timeout`` seconds; forever if None),
        or with ``block=False`` raises ``queue.Full`` at once.
        """
        fields = {"value": _encode(obj)}
        if not block:
            fields["block"] = False
        else:
            ms = timeout_ms(timeout)
            if ms is not None:
                fields["timeout_ms"] = ms
        self._call("queue_put", **fields)

    def get(self, block=True, timeout=None):
        """Removes and returns the oldest item.

        On an empty queue: waits for one (up to ``timeout`` seconds; forever if None),
        or with ``block=False`` raises ``queue.Empty`` at once.
        """
        return self.get_many(1, block=block, timeout=timeout)[0]

    def get_many(self, count, block=True, timeout=None):
        """Removes and returns up to ``count`` items (at least one), oldest first."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive int")
        fields = {"count": count}
        if not block:
            fields["block"] = False
        else:
            ms = timeout_ms(timeout)
            if ms is not None:
                fields["timeout_ms"] = ms
        return [_decode(item) for item in self._call("queue_get", **fields)["items"]]

    def put_nowait(self, obj):
        """``put(obj, block=False)``."""
        self.put(obj, block=False)

    def get_nowait(self):
        """``get(block=False)``."""
        return self.get(block=False)

    def _info(self):
        return self._call("queue_len")

    def qsize(self):
        """Number of items in the queue now."""
        return self._info()["depth"]

    def empty(self):
        """Whether the queue is empty now."""
        return self.qsize() == 0

    def full(self):
        """Whether the queue is at its capacity now (never, if unbounded)."""
        info = self._info()
        maxsize = info.get("maxsize")
        return maxsize is not None and maxsize > 0 and info["depth"] >= maxsize

    @property
    def maxsize(self):
        """The capacity corrald enforces (0: unbounded)."""
        return self._info().get("maxsize") or 0

    def purge(self):
        """Removes every item; returns how many."""
        return self._call("queue_purge")["removed"]

    def delete(self):
        """Removes the queue and its items (waiting getters get ``NotFound``)."""
        return self._call("queue_delete")["removed"]

    def close(self):
        """For compatibility with multiprocessing; nothing to flush (puts are synchronous)."""

    def join_thread(self):
        """For compatibility with multiprocessing; a no-op."""

    def cancel_join_thread(self):
        """For compatibility with multiprocessing; a no-op."""


# Items that are JSON as they are travel as JSON (readable by any client); anything
# else (tuples, bytes, sets, objects...) as a pickle in {PICKLED: base64}, which this
# client turns back into the object.
PICKLED = "$corral.pickle"
_PLAIN = (str, int, float, bool, type(None))


def _is_json(obj, depth=0):
    if depth > 100:
        return False
    t = type(obj)
    if t in _PLAIN:
        return t is not float or math.isfinite(obj)
    if t is list:
        return all(_is_json(x, depth + 1) for x in obj)
    if t is dict:
        return PICKLED not in obj and all(
            type(k) is str and _is_json(v, depth + 1) for k, v in obj.items()
        )
    return False


def _encode(obj):
    if _is_json(obj):
        return obj
    from . import _payload

    data = _payload.dumps(obj, "the queue item")
    return {PICKLED: base64.b64encode(data).decode("ascii")}


def _decode(item):
    if type(item) is dict and len(item) == 1 and PICKLED in item:
        return pickle.loads(base64.b64decode(item[PICKLED]))
    return item
