"""Value and Array: named counters and fixed-length numeric arrays served by corrald."""

import math
import numbers
import operator
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    Union,
    cast,
    overload,
)

from . import _anon, _client
from .errors import InvalidArgument, OutOfRange

if TYPE_CHECKING:
    from ._lock import Lock

__all__ = ["Value", "SharedValue", "Array"]

# An element of an Array: an int (i64) or a float (f64).
Number = Union[int, float]


def _typecode(obj: Any) -> Optional[str]:
    """The typecode of ``obj`` if it names an element type (``"i"``, ``"d"``,
    ``ctypes.c_int``...), else None."""
    code = getattr(obj, "_type_", obj)
    if isinstance(code, str) and len(code) == 1 and code in _KINDS:
        return code
    return None


class Value:
    """``Value(typecode, value=0, lock=True)``, as multiprocessing: an anonymous shared
    number (integer typecodes ``b h i l q`` and unsigned ones, or ``f d``, or a
    ``ctypes`` type), removed when this program exits; ``with v.get_lock(): v.value
    += 1`` is exact across processes. See :class:`SharedValue`.

    ``Value("hits")`` (a name that is not a typecode): the named, durable, machine-wide
    64-bit signed counter ``hits`` (a counter never set reads 0);
    ``Value("hits", 0)`` also sets it, overwriting what another program stored.
    ``v.value`` reads or writes it; ``v.add(n)`` adds atomically and returns the new
    value (``v.value += 1`` is a read then a write, not atomic, as in
    multiprocessing: use ``add``, or hold ``get_lock()``). Overflow raises
    :class:`corral.Overflow` (a ``ValueError``), never wraps.
    """

    def __new__(cls, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        if cls is Value and _typecode(name) is not None:
            return SharedValue(name, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self, name: str, initial: Optional[int] = None, *, socket: Optional[str] = None
    ) -> None:
        if not isinstance(name, str):
            raise TypeError("counter name must be a string or a typecode, not %r" % (name,))
        self.name = name
        self._socket = socket
        self._lock: Optional[Lock] = None
        if initial is not None:
            self.value = initial

    def _call(self, op: str, **fields: Any) -> Any:
        return _client.call(op, socket=self._socket, counter=self.name, **fields)

    def __repr__(self) -> str:
        return "<corral.Value %r>" % self.name

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_named_value, (self.name, self._socket))

    @property
    def value(self) -> int:
        """The counter's value now."""
        return self._call("counter_get")["value"]

    @value.setter
    def value(self, new: int) -> None:
        self._call("counter_set", value=_int(new))

    def add(self, delta: int = 1) -> int:
        """Adds ``delta`` (may be negative) atomically; returns the new value."""
        return self._call("counter_add", delta=_int(delta))["value"]

    def compare_and_swap(self, expected: int, new: int) -> bool:
        """Sets the value to ``new`` only if it is ``expected``; returns whether it did."""
        return self._call("counter_cas", expected=_int(expected), new=_int(new))["swapped"]

    def delete(self) -> bool:
        """Forgets the counter (it reads 0 again)."""
        return self._call("counter_delete")["removed"]

    def get_lock(self) -> "Lock":
        """A :class:`corral.Lock` named ``NAME.lock``, for multiprocessing-style code."""
        if self._lock is None:
            from ._lock import Lock

            self._lock = Lock(self.name + ".lock", socket=self._socket)
        return self._lock

    def get_obj(self) -> "Value":
        return self


def _named_value(name: str, socket: Optional[str]) -> Value:
    return Value(name, socket=socket)


class SharedValue:
    """multiprocessing's ``Value(typecode, value, lock=True)``: one number in corrald
    (an anonymous one-element array), its ``get_lock()`` a :class:`corral.Lock`.

    Pickled by reference, so it can be passed to Process args, Pool tasks and through
    queues; removed when the program that made it exits. ``v.value`` reads and
    writes; ``v.add(n)`` adds atomically. ``name=`` makes a durable named one instead.
    """

    def __init__(
        self,
        typecode_or_type: Any,
        *args: Number,
        lock: Any = True,
        name: Optional[str] = None,
        socket: Optional[str] = None,
        ctx: Any = None,
    ) -> None:
        code = _typecode(typecode_or_type)
        if code is None:
            raise TypeError("unknown typecode %r" % (typecode_or_type,))
        if len(args) > 1:
            raise TypeError("Value(typecode, value=0, lock=True)")
        initial = args[0] if args else 0
        anonymous = name is None
        self.name = name or _anon.name("value")
        self._code = code
        self._socket = socket
        self._array = Array(self.name, code, [initial], socket=socket)
        self._lock: Optional[Lock] = None
        self._lock_name: Optional[str] = None
        if lock is not False:
            from ._lock import Lock

            self._lock = lock if isinstance(lock, Lock) else Lock(self.name + ".lock", socket=socket)
            self._lock_name = self._lock.name
        if anonymous:
            _anon.made("array", self.name, socket)

    @classmethod
    def _attach(
        cls, name: str, code: str, lock_name: Optional[str], socket: Optional[str]
    ) -> "SharedValue":
        self = cls.__new__(cls)
        self.name, self._code, self._socket = name, code, socket
        self._array = Array.__new__(Array)
        self._array.name, self._array._socket = name, socket
        self._array.kind, self._array._length = _KINDS[code], 1
        self._lock_name = lock_name
        self._lock = None
        if lock_name is not None:
            from ._lock import Lock

            self._lock = Lock(lock_name, socket=socket)
        return self

    def __reduce__(self) -> Tuple[Any, ...]:
        return (SharedValue._attach, (self.name, self._code, self._lock_name, self._socket))

    def __repr__(self) -> str:
        return "<corral.Value(%r, %r) %s>" % (self._code, self.value, self.name)

    @property
    def typecode(self) -> str:
        return self._code

    @property
    def value(self) -> Number:
        return self._array[0]

    @value.setter
    def value(self, new: Number) -> None:
        self._array[0] = new

    def add(self, delta: Number = 1) -> Number:
        """Adds ``delta`` atomically; returns the new value."""
        return self._array.add(0, delta)

    def get_lock(self) -> "Lock":
        if self._lock is None:
            raise AttributeError("this Value was made with lock=False: it has no get_lock()")
        return self._lock

    def acquire(self, *args: Any) -> bool:
        return self.get_lock().acquire(*args)

    def release(self) -> None:
        return self.get_lock().release()

    def __enter__(self) -> "Lock":
        return self.get_lock().__enter__()

    def __exit__(self, *exc: object) -> None:
        return self.get_lock().__exit__(*exc)

    def get_obj(self) -> "SharedValue":
        return self


def _int(value: Any) -> int:
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

    def __init__(
        self,
        name: Any,
        typecode_or_kind: Any = None,
        size_or_initializer: Union[int, Iterable[Number], None] = None,
        *,
        lock: Any = True,
        socket: Optional[str] = None,
        ctx: Any = None,
    ) -> None:
        # multiprocessing's Array(typecode, size_or_initializer): anonymous.
        anonymous = False
        if (
            _typecode(name) is not None
            and size_or_initializer is None
            and typecode_or_kind is not None
            and not (isinstance(typecode_or_kind, str) and typecode_or_kind in _KINDS)
        ):
            name, typecode_or_kind, size_or_initializer = (
                _anon.name("array"),
                _typecode(name),
                typecode_or_kind,
            )
            anonymous = True
        if not isinstance(name, str):
            raise TypeError("array name must be a string, not %r" % (name,))
        self.name = name
        self._socket = socket
        self._lock: Optional[Lock] = None
        self._with_lock = lock is not False
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
            fields: Dict[str, Any] = {"kind": kind}
            if isinstance(size_or_initializer, numbers.Integral) and not isinstance(
                size_or_initializer, bool
            ):
                if size_or_initializer < 0:
                    raise InvalidArgument("an array length cannot be negative", "bad_request")
                fields["length"] = int(size_or_initializer)
            else:
                initializer = cast(Iterable[Number], size_or_initializer)
                values = [_element(kind, v) for v in initializer]
                fields["length"] = len(values)
                fields["values"] = values
            result = self._call("array_create", **fields)
        self.kind: str = result["kind"]
        self._length: int = result.get("length", len(result["values"]))
        if anonymous:
            _anon.made("array", self.name, socket)

    def get_lock(self) -> "Lock":
        """A :class:`corral.Lock` named ``NAME.lock`` (for ``with a.get_lock():``)."""
        if self._lock is None:
            from ._lock import Lock

            self._lock = Lock(self.name + ".lock", socket=self._socket)
        return self._lock

    def __enter__(self) -> "Lock":
        return self.get_lock().__enter__()

    def __exit__(self, *exc: object) -> None:
        return self.get_lock().__exit__(*exc)

    def _call(self, op: str, **fields: Any) -> Any:
        return _client.call(op, socket=self._socket, array=self.name, **fields)

    def __repr__(self) -> str:
        return "<corral.Array %r %s[%d]>" % (self.name, self.kind, self._length)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach_array, (self.name, self.kind, self._length, self._socket))

    @property
    def typecode(self) -> str:
        return "q" if self.kind == "i64" else "d"

    def __len__(self) -> int:
        return self._length

    def _index(self, i: Any) -> int:
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

    def _convert(self, value: Any) -> Number:
        return float(value) if self.kind == "f64" else int(value)

    @overload
    def __getitem__(self, i: int) -> Number: ...

    @overload
    def __getitem__(self, i: slice) -> List[Number]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[Number, List[Number]]:
        if isinstance(i, slice):
            return self.tolist()[i]
        i = self._index(i)
        return self._convert(self._call("array_get", index=i)["value"])

    def __setitem__(self, i: Union[int, slice], value: Any) -> None:
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

    def add(self, i: int, delta: Number) -> Number:
        """Adds ``delta`` to element ``i`` atomically; returns the new value."""
        i = self._index(i)
        result = self._call("array_add", index=i, delta=_element(self.kind, delta))
        return self._convert(result["value"])

    def tolist(self) -> List[Number]:
        """Every element, read at once (a long array in slices of at most 65,536
        elements, each read at once)."""
        values: List[Number] = []
        while True:
            part = self._call("array_get", offset=len(values), length=_MAX_ARRAY_SLICE)
            values.extend(self._convert(v) for v in part["values"])
            if not part["values"] or len(values) >= part.get("length", len(values)):
                return values

    def __iter__(self) -> Iterator[Number]:
        return iter(self.tolist())

    def delete(self) -> bool:
        """Forgets the array."""
        return self._call("array_delete")["removed"]

    def get_obj(self) -> "Array":
        return self


def _attach_array(name: str, kind: str, length: int, socket: Optional[str]) -> Array:
    a = Array.__new__(Array)
    a.name, a.kind, a._length, a._socket, a._lock, a._with_lock = name, kind, length, socket, None, True
    return a


def _element(kind: str, value: Any) -> Number:
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
