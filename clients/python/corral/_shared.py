"""Value and Array: named counters and fixed-length numeric arrays served by corrald."""

import math
import numbers
import operator

from . import _client
from .errors import InvalidArgument, OutOfRange

__all__ = ["Value", "Array"]


class Value:
    """A named 64-bit signed counter (``multiprocessing.Value('i', ...)``).

    ``Value("hits")`` attaches to the counter ``hits`` (a counter never set reads 0);
    ``Value("hits", 0)`` also sets it, overwriting what another program stored.
    ``v.value`` reads or writes it; ``v.add(n)`` adds atomically and returns the new
    value (``v.value += 1`` is a read then a write, not atomic, as in
    multiprocessing: use ``add``, or hold ``get_lock()``). Overflow raises
    :class:`corral.Overflow` (a ``ValueError``), never wraps.
    """

    def __init__(self, name, initial=None, *, socket=None):
        if not isinstance(name, str):
            raise TypeError("counter name must be a string, not %r" % (name,))
        self.name = name
        self._socket = socket
        self._lock = None
        if initial is not None:
            self.value = initial

    def _call(self, op, **fields):
        return _client.call(op, socket=self._socket, counter=self.name, **fields)

    def __repr__(self):
        return "<corral.Value %r>" % self.name

    def __reduce__(self):
        return (Value, (self.name,), {"_socket": self._socket, "_lock": None})

    @property
    def value(self):
        """The counter's value now."""
        return self._call("counter_get")["value"]

    @value.setter
    def value(self, new):
        self._call("counter_set", value=_int(new))

    def add(self, delta=1):
        """Adds ``delta`` (may be negative) atomically; returns the new value."""
        return self._call("counter_add", delta=_int(delta))["value"]

    def compare_and_swap(self, expected, new):
        """Sets the value to ``new`` only if it is ``expected``; returns whether it did."""
        return self._call("counter_cas", expected=_int(expected), new=_int(new))["swapped"]

    def delete(self):
        """Forgets the counter (it reads 0 again)."""
        return self._call("counter_delete")["removed"]

    def get_lock(self):
        """A :class:`corral.Lock` named ``NAME.lock``, for multiprocessing-style code."""
        if self._lock is None:
            from ._lock import Lock

            self._lock = Lock(self.name + ".lock", socket=self._socket)
        return self._lock

    def get_obj(self):
        return self


def _int(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(
            "a counter holds 64-bit integers, not %r" % (value,), "bad_request"
        )
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise InvalidArgument(
            "%d does not fit a counter (64-bit signed integer)" % value, "bad_request"
        )
    return value


# typecodes of the array module / multiprocessing.Array, by element kind
_KINDS = {"i64": "i64", "f64": "f64", "int": "i64", "float": "f64"}
_KINDS.update({c: "i64" for c in "bBhHiIlLqQ"})
_KINDS.update({c: "f64" for c in "fd"})


# Most elements corrald sends in one reply (MAX_ARRAY_SLICE in the protocol).
_MAX_ARRAY_SLICE = 65536


class Array:
    """A named fixed-length array of ``i64`` or ``f64`` (``multiprocessing.Array``).

    ``Array("temps", "d", 4)`` creates it with zeros (or attaches to it if it exists
    with that type and length); ``Array("temps", "d", [1.0, 2.0])`` creates or
    overwrites it with these values; ``Array("temps")`` attaches to an existing one.
    Typecodes ``b h i l q`` (and unsigned ones) are ``i64``; ``f d`` are ``f64``;
    ``"i64"``/``"f64"`` are accepted too.

    ``a[i]``, ``a[i] = x``, ``a.add(i, delta)`` (atomic, returns the new value),
    ``len(a)``, iteration and ``a[:]`` (a list, read at once) work as expected;
    assigning a slice writes element by element (not atomic).
    """

    def __init__(self, name, typecode_or_kind=None, size_or_initializer=None, *, socket=None):
        if not isinstance(name, str):
            raise TypeError("array name must be a string, not %r" % (name,))
        self.name = name
        self._socket = socket
        if typecode_or_kind is None and size_or_initializer is None:
            result = self._call("array_get", length=0)
        else:
            kind = _KINDS.get(typecode_or_kind)
            if kind is None:
                raise InvalidArgument(
                    "unknown array type %r: use a typecode (i, l, q: i64; f, d: f64) or "
                    "'i64'/'f64'" % (typecode_or_kind,),
                    "bad_request",
                )
            if size_or_initializer is None:
                raise TypeError("give the array's length or its initial values")
            fields = {"kind": kind}
            if isinstance(size_or_initializer, numbers.Integral) and not isinstance(
                size_or_initializer, bool
            ):
                if size_or_initializer < 0:
                    raise InvalidArgument("an array length cannot be negative", "bad_request")
                fields["length"] = int(size_or_initializer)
            else:
                values = [_element(kind, v) for v in size_or_initializer]
                fields["length"] = len(values)
                fields["values"] = values
            result = self._call("array_create", **fields)
        self.kind = result["kind"]
        self._length = result.get("length", len(result["values"]))

    def _call(self, op, **fields):
        return _client.call(op, socket=self._socket, array=self.name, **fields)

    def __repr__(self):
        return "<corral.Array %r %s[%d]>" % (self.name, self.kind, self._length)

    def __reduce__(self):
        return (Array, (self.name,), {"_socket": self._socket})

    @property
    def typecode(self):
        return "q" if self.kind == "i64" else "d"

    def __len__(self):
        return self._length

    def _index(self, i):
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError("array indices must be integers or slices, not %s" % type(i).__name__)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise OutOfRange(
                "index %d out of range for array `%s` of length %d"
                % (i if i >= 0 else i - self._length, self.name, self._length),
                "out_of_range",
            )
        return i

    def _convert(self, value):
        return float(value) if self.kind == "f64" else int(value)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.tolist()[i]
        i = self._index(i)
        return self._convert(self._call("array_get", index=i)["value"])

    def __setitem__(self, i, value):
        if isinstance(i, slice):
            indices = range(*i.indices(self._length))
            values = list(value)
            if len(values) != len(indices):
                raise ValueError("Can only assign sequence of same size")
            for j, v in zip(indices, values):
                self._call("array_set", index=j, value=_element(self.kind, v))
            return
        i = self._index(i)
        self._call("array_set", index=i, value=_element(self.kind, value))

    def add(self, i, delta):
        """Adds ``delta`` to element ``i`` atomically; returns the new value."""
        i = self._index(i)
        result = self._call("array_add", index=i, delta=_element(self.kind, delta))
        return self._convert(result["value"])

    def tolist(self):
        """Every element, read at once (a long array in slices of at most 65,536
        elements, each read at once)."""
        values = []
        while True:
            part = self._call("array_get", offset=len(values), length=_MAX_ARRAY_SLICE)
            values.extend(self._convert(v) for v in part["values"])
            if not part["values"] or len(values) >= part.get("length", len(values)):
                return values

    def __iter__(self):
        return iter(self.tolist())

    def delete(self):
        """Forgets the array."""
        return self._call("array_delete")["removed"]

    def get_obj(self):
        return self


def _element(kind, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(
            "an %s array holds numbers, not %r" % (kind, value), "type_mismatch"
        )
    if kind == "i64":
        if not isinstance(value, numbers.Integral):
            raise InvalidArgument(
                "an i64 array holds integers, not %r" % (value,), "type_mismatch"
            )
        value = int(value)
        if not -(2**63) <= value < 2**63:
            raise InvalidArgument("%d does not fit an i64 element" % value, "bad_request")
        return value
    value = float(value)
    if not math.isfinite(value):
        raise InvalidArgument("an f64 array holds finite numbers, not %r" % value, "bad_request")
    return value
