"""Queue: a named, durable FIFO served by corrald (``multiprocessing.Queue``)."""

import base64
import math
import pickle
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _anon, _client
from .errors import CorralConnectionError, CorralError

__all__ = ["Queue", "Message"]

DEFAULT_VISIBILITY = 30.0


def timeout_ms(timeout: Optional[float], what: str = "timeout") -> Optional[int]:
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

    def __init__(
        self,
        name: Union[str, int, None] = None,
        maxsize: int = 0,
        *,
        max_deliveries: Optional[int] = None,
        dead_letter: Optional[str] = None,
        socket: Optional[str] = None,
        ctx: Any = None,
    ) -> None:
        # multiprocessing's Queue(maxsize): a number first is the capacity.
        if isinstance(name, int) and not isinstance(name, bool):
            maxsize = name
            name = None
        anonymous = name is None
        if anonymous:
            name = _anon.name("queue")
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
            fields: Dict[str, Any] = {}
            if maxsize > 0:
                fields["maxsize"] = maxsize
            if max_deliveries is not None:
                fields["max_deliveries"] = max_deliveries
            if dead_letter is not None:
                fields["dead_letter"] = dead_letter
            self._call("queue_declare", **fields)
        if anonymous:
            _anon.made("queue", self.name, socket)

    def _call(self, op: str, **fields: Any) -> Any:
        return _client.call(op, socket=self._socket, queue=self.name, **fields)

    def __repr__(self) -> str:
        return "<corral.Queue %r>" % self.name

    def __reduce__(self) -> Tuple[Any, ...]:
        return (Queue, (self.name,), {"_socket": self._socket, "_maxsize": self._maxsize})

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Appends ``obj``; returns once corrald has committed it.

        On a full queue: waits for room (up to ``timeout`` seconds; forever if None),
        or with ``block=False`` raises ``queue.Full`` at once.
        """
        fields: Dict[str, Any] = {"value": _encode(obj)}
        if not block:
            fields["block"] = False
        else:
            ms = timeout_ms(timeout)
            if ms is not None:
                fields["timeout_ms"] = ms
        self._call("queue_put", **fields)

    def get(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        *,
        ack: bool = False,
        visibility: float = DEFAULT_VISIBILITY,
    ) -> Any:
        """Removes and returns the oldest item.

        On an empty queue: waits for one (up to ``timeout`` seconds; forever if None),
        or with ``block=False`` raises ``queue.Empty`` at once.

        With ``ack=True``, returns a :class:`Message` instead (``.value`` is the item),
        leased for ``visibility`` seconds: the item is removed by ``message.ack()``, and
        delivered again (``message.deliveries`` counts) if it is not acked in time, is
        nacked, or this process exits first.
        """
        return self.get_many(1, block=block, timeout=timeout, ack=ack, visibility=visibility)[0]

    def get_many(
        self,
        count: int,
        block: bool = True,
        timeout: Optional[float] = None,
        *,
        ack: bool = False,
        visibility: float = DEFAULT_VISIBILITY,
    ) -> List[Any]:
        """Removes and returns up to ``count`` items (at least one), oldest first.

        With ``ack=True``, a list of :class:`Message` (see :meth:`get`)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive int")
        fields: Dict[str, Any] = {"count": count}
        if not block:
            fields["block"] = False
        else:
            ms = timeout_ms(timeout)
            if ms is not None:
                fields["timeout_ms"] = ms
        if not ack:
            return [_decode(item) for item in self._call("queue_get", **fields)["items"]]
        fields["ack"] = True
        fields["visibility_ms"] = max(1, timeout_ms(visibility, "visibility") or 1)
        # The leases are bound to the connection that took them: it stays out of the
        # pool until every message is acked or nacked, and closing it (this process
        # exiting, or every message dropped unacked) returns the items.
        path, conn = _client._checkout(self._socket)
        try:
            result = conn.request("queue_get", dict(fields, queue=self.name))
        except CorralConnectionError:
            conn.close()
            raise
        except CorralError:
            _client._checkin(path, conn)
            raise
        except BaseException:
            conn.close()
            raise
        holder = _Leases(path, conn, len(result["items"]))
        return [
            Message(self.name, _decode(item), lease["id"], lease["deliveries"], holder)
            for item, lease in zip(result["items"], result["leases"])
        ]

    def ack(self, *ids: int) -> int:
        """Acks leases by id (e.g. ``message.id`` handed to another process)."""
        return self._call("queue_ack", ids=list(ids))["count"]

    def nack(self, *ids: int) -> int:
        """Returns leased items by id to the head of the queue now."""
        return self._call("queue_nack", ids=list(ids))["count"]

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, block=False)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def _info(self) -> Dict[str, Any]:
        return self._call("queue_len")

    def qsize(self) -> int:
        """Number of items in the queue now (waiting; not those in flight)."""
        return self._info()["depth"]

    def in_flight(self) -> int:
        """Number of items handed out by ``get(ack=True)`` and not acked yet."""
        return self._info().get("in_flight", 0)

    def empty(self) -> bool:
        """Whether the queue is empty now."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether the queue is at its capacity now (never, if unbounded); items in
        flight count toward it."""
        info = self._info()
        maxsize = info.get("maxsize")
        held = info["depth"] + info.get("in_flight", 0)
        return maxsize is not None and maxsize > 0 and held >= maxsize

    @property
    def maxsize(self) -> int:
        """The capacity corrald enforces (0: unbounded)."""
        return self._info().get("maxsize") or 0

    def purge(self) -> int:
        """Removes every item; returns how many."""
        return self._call("queue_purge")["removed"]

    def delete(self) -> bool:
        """Removes the queue and its items (waiting getters get ``NotFound``)."""
        return self._call("queue_delete")["removed"]

    def close(self) -> None:
        """For compatibility with multiprocessing; nothing to flush (puts are synchronous)."""

    def join_thread(self) -> None:
        """For compatibility with multiprocessing; a no-op."""

    def cancel_join_thread(self) -> None:
        """For compatibility with multiprocessing; a no-op."""


class _Leases:
    """The connection holding a get's leases, back to the pool once all have ended."""

    def __init__(self, path: str, conn: _client.Connection, count: int) -> None:
        self.path = path
        self.conn = conn
        self.open = count

    def request(self, op: str, fields: Dict[str, Any]) -> Any:
        return self.conn.request(op, fields)

    def ended(self) -> None:
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

    def __init__(
        self, queue: str, value: Any, lease_id: int, deliveries: int, holder: _Leases
    ) -> None:
        self.queue = queue
        self.value = value
        self.id = lease_id
        self.deliveries = deliveries
        self._holder = holder
        self._done = False

    def __repr__(self) -> str:
        return "<corral.Message %r of %r, delivery %d%s>" % (
            self.value,
            self.queue,
            self.deliveries,
            ", ended" if self._done else "",
        )

    def _end(self, op: str) -> None:
        if self._done:
            raise ValueError("this message was already acked or nacked")
        try:
            self._holder.request(op, {"queue": self.queue, "ids": [self.id]})
        finally:
            self._done = True
            self._holder.ended()

    def ack(self) -> None:
        """Removes the item for good (its processing is done)."""
        self._end("queue_ack")

    def nack(self) -> None:
        """Puts the item back at the head of the queue now, for another delivery."""
        self._end("queue_nack")


# Items that are JSON as they are travel as JSON (readable by any client); anything
# else (tuples, bytes, sets, objects...) as a pickle in {PICKLED: base64}, which this
# client turns back into the object.
PICKLED = "$corral.pickle"
_PLAIN = (str, int, float, bool, type(None))


def _is_json(obj: Any, depth: int = 0) -> bool:
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


def _encode(obj: Any) -> Any:
    if _is_json(obj):
        return obj
    from . import _payload

    data = _payload.dumps(obj, "the queue item")
    return {PICKLED: base64.b64encode(data).decode("ascii")}


def _decode(item: Any) -> Any:
    if type(item) is dict and len(item) == 1 and PICKLED in item:
        return pickle.loads(base64.b64decode(item[PICKLED]))
    return item
