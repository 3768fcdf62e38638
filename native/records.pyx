# Cython twin of gateway/_records_py.py, built by setup.py as ``gateway._records_c``.
"""The records of the message path: the native twin.

Every accepted message makes three of them (the ``AppendMessage`` the node submits, the
``StoredMessage`` the store assigns a ``seq`` to, the ``Appended`` result that carries the ack), and
a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``: about 1.5 µs a
message for the three, a tenth of the gateway's whole cost per message. These extension types
store their fields in C slots, come from a free list and are built in a fraction of that.

Same behaviour as :mod:`gateway._records_py` (the documentation of the fields is there): the same
constructor, ``repr``, equality, hash, immutability (assignment raises ``AttributeError``) and
pickling; the differential tests in ``tests/test_records_native.py`` hold both to it.
"""

cimport cython

__all__ = ["Appended", "AppendMessage", "StoredMessage"]


@cython.final
@cython.freelist(256)
cdef class StoredMessage:
    """A message as it is durable: ``body`` is the msgpack encoding of the body map, kept packed so
    that delivery frames splice it in without re-encoding."""

    cdef readonly object conv_id
    cdef readonly object seq
    cdef readonly object cmid
    cdef readonly object sender
    cdef readonly object sender_role
    cdef readonly object ts
    cdef readonly object body

    __match_args__ = ("conv_id", "seq", "cmid", "sender", "sender_role", "ts", "body")

    def __init__(self, conv_id, seq, cmid, sender, sender_role, ts, body):
        self.conv_id = conv_id
        self.seq = seq
        self.cmid = cmid
        self.sender = sender
        self.sender_role = sender_role
        self.ts = ts
        self.body = body

    cdef tuple _fields(self):
        return (self.conv_id, self.seq, self.cmid, self.sender, self.sender_role, self.ts, self.body)

    def __eq__(self, other):
        if type(other) is not StoredMessage:
            return NotImplemented
        return self._fields() == (<StoredMessage>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (
            f"StoredMessage(conv_id={self.conv_id!r}, seq={self.seq!r}, cmid={self.cmid!r}, sender={self.sender!r}, "
            f"sender_role={self.sender_role!r}, ts={self.ts!r}, body={self.body!r})"
        )

    def __reduce__(self):
        return StoredMessage, self._fields()


@cython.final
@cython.freelist(256)
cdef class AppendMessage:
    """Append one message. The store assigns ``seq`` (last_seq + 1) and ``ts``; if the same
    (conv_id, sender, cmid) is already stored, nothing is written and the stored one is returned."""

    cdef readonly object conv_id
    cdef readonly object cmid
    cdef readonly object sender
    cdef readonly object sender_role
    cdef readonly object body

    __match_args__ = ("conv_id", "cmid", "sender", "sender_role", "body")

    def __init__(self, conv_id, cmid, sender, sender_role, body):
        self.conv_id = conv_id
        self.cmid = cmid
        self.sender = sender
        self.sender_role = sender_role
        self.body = body

    cdef tuple _fields(self):
        return (self.conv_id, self.cmid, self.sender, self.sender_role, self.body)

    def __eq__(self, other):
        if type(other) is not AppendMessage:
            return NotImplemented
        return self._fields() == (<AppendMessage>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (
            f"AppendMessage(conv_id={self.conv_id!r}, cmid={self.cmid!r}, sender={self.sender!r}, "
            f"sender_role={self.sender_role!r}, body={self.body!r})"
        )

    def __reduce__(self):
        return AppendMessage, self._fields()


@cython.final
@cython.freelist(256)
cdef class Appended:
    """The result of an AppendMessage: the stored message, and whether it was already there."""

    cdef readonly object message
    cdef readonly object duplicate

    __match_args__ = ("message", "duplicate")

    def __init__(self, message, duplicate=False):
        self.message = message
        self.duplicate = duplicate

    def __eq__(self, other):
        if type(other) is not Appended:
            return NotImplemented
        return (self.message, self.duplicate) == ((<Appended>other).message, (<Appended>other).duplicate)

    def __hash__(self):
        return hash((self.message, self.duplicate))

    def __repr__(self):
        return f"Appended(message={self.message!r}, duplicate={self.duplicate!r})"

    def __reduce__(self):
        return Appended, (self.message, self.duplicate)
