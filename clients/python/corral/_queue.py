"""Queue: a named, durable FIFO served by corrald (``multiprocessing.Queue``)."""

import math
import uuid

from . import _client

__all__ = ["Queue", "Message"]

DEFAULT_VISIBILITY = 30.0


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
    answering: delivery is at most once. ``get(ack=True)`` delivers at least once: it
    returns a :class:`Message` whose item stays stored until ``message.ack()``, and goes
    back to the head of the queue if this process does not ack it within
    ``visibility`` seconds, calls ``message.nack()``, drops the message, or dies.

    ``max_deliveries`` (with ``dead_letter``, default ``NAME.dead``) declares that an
    item delivered that many times by acknowledged gets and returned unacked once more
    goes to the dead-letter queue instead of back to this one.
    """

    def __init__(self, name=None, maxsize=0, *, max_deliveries=None, dead_letter=None, socket=None):
        if name is None:
            name = "py-" + uuid.uuid4().hex
        if not isinstance(name, str):
            raise TypeError("queue name must be a string, not %r" % (name,))
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError("maxsize must be an int")
        if max_deliveries is not None and (
            isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int)
        ):
            raise TypeError("max_deliveries must be an int or None")
        if dead_letter is not None and max_deliveries is None:
            raise ValueError("dead_letter needs max_deliveries (when to give up on an item)")
        self.name = name
        self._socket = socket
        self._maxsize = maxsize
        if maxsize > 0 or max_deliveries is not None:
            fields = {}
            if maxsize > 0:
                fields["maxsize"] = maxsize
            if max_deliveries is not None:
                fields["max_deliveries"] = max_deliveries
            if dead_letter is not None:
                fields["dead_letter"] = dead_letter
            self._call("queue_declare", **fields)

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
        fields = {"value": obj}
        if not block:
            fields["block"] = False
        else:
            ms = timeout_ms(timeout)
            if ms is not None:
                fields["timeout_ms"] = ms
        self._call("queue_put", **fields)

    def get(self, block=True, timeout=None, *, ack=False, visibility=DEFAULT_VISIBILITY):
        """Removes and returns the oldest item.

        On an empty queue: waits for one (up to ``timeout`` seconds; forever if None),
        or with ``block=False`` raises ``queue.Empty`` at once.

        With ``ack=True``, returns a :class:`Message` instead (``.value`` is the item),
        leased for ``visibility`` seconds: the item is removed by ``message.ack()``, and
        delivered again (``message.deliveries`` counts) if it is not acked in time, is
        nacked, or this process exits first.
        """
        return self.get_many(1, block=block, timeout=timeout, ack=ack, visibility=visibility)[0]

    def get_many(self, count, block=True, timeout=None, *, ack=False, visibility=DEFAULT_VISIBILITY):
        """Removes and returns up to ``count`` items (at least one), oldest first.

        With ``ack=True``, a list of :class:`Message` (see :meth:`get`)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive int")
        fields = {"count": count}
        if not block:
            fields["block"] = False
        else:
            ms = timeout_ms(timeout)
            if ms is not None:
                fields["timeout_ms"] = ms
        if not ack:
            return self._call("queue_get", **fields)["items"]
        fields["ack"] = True
        fields["visibility_ms"] = max(1, timeout_ms(visibility, "visibility") or 1)
        # The leases are bound to the connection that took them: it stays out of the
        # pool until every message is acked or nacked, and closing it (this process
        # exiting, or every message dropped unacked) returns the items.
        path, conn = _client._checkout(self._socket)
        try:
            result = conn.request("queue_get", dict(fields, queue=self.name))
        except _client.CorralConnectionError:
            conn.close()
            raise
        except _client.CorralError:
            _client._checkin(path, conn)
            raise
        except BaseException:
            conn.close()
            raise
        holder = _Leases(path, conn, len(result["items"]))
        return [
            Message(self.name, item, lease["id"], lease["deliveries"], holder)
            for item, lease in zip(result["items"], result["leases"])
        ]

    def ack(self, *ids):
        """Acks leases by id (e.g. ``message.id`` handed to another process)."""
        return self._call("queue_ack", ids=list(ids))["count"]

    def nack(self, *ids):
        """Returns leased items by id to the head of the queue now."""
        return self._call("queue_nack", ids=list(ids))["count"]

    def put_nowait(self, obj):
        """``put(obj, block=False)``."""
        self.put(obj, block=False)

    def get_nowait(self):
        """``get(block=False)``."""
        return self.get(block=False)

    def _info(self):
        return self._call("queue_len")

    def qsize(self):
        """Number of items in the queue now (waiting; not those in flight)."""
        return self._info()["depth"]

    def in_flight(self):
        """Number of items handed out by ``get(ack=True)`` and not acked yet."""
        return self._info().get("in_flight", 0)

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


class _Leases:
    """The connection holding a get's leases, back to the pool once all have ended."""

    def __init__(self, path, conn, count):
        self.path = path
        self.conn = conn
        self.open = count

    def request(self, op, fields):
        return self.conn.request(op, fields)

    def ended(self):
        self.open -= 1
        if self.open == 0:
            _client._checkin(self.path, self.conn)


class Message:
    """An item taken by ``Queue.get(ack=True)``, leased until acked.

    ``value`` is the item; ``deliveries`` how many times it has been delivered, this
    time included (more than 1: an earlier consumer did not ack it); ``id`` names the
    lease. ``ack()`` removes the item for good; ``nack()`` puts it back at the head of
    the queue now. Both raise :class:`corral.NotHeld` if the lease ended first (the
    visibility timeout passed, or corrald restarted): the item was or will be delivered
    again. A message dropped without either is returned when its connection closes.
    """

    def __init__(self, queue, value, lease_id, deliveries, holder):
        self.queue = queue
        self.value = value
        self.id = lease_id
        self.deliveries = deliveries
        self._holder = holder
        self._done = False

    def __repr__(self):
        return "<corral.Message %r of %r, delivery %d%s>" % (
            self.value,
            self.queue,
            self.deliveries,
            ", ended" if self._done else "",
        )

    def _end(self, op):
        if self._done:
            raise ValueError("this message was already acked or nacked")
        try:
            self._holder.request(op, {"queue": self.queue, "ids": [self.id]})
        finally:
            self._done = True
            self._holder.ended()

    def ack(self):
        """Removes the item for good (its processing is done)."""
        self._end("queue_ack")

    def nack(self):
        """Puts the item back at the head of the queue now, for another delivery."""
        self._end("queue_nack")
