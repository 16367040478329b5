"""Functions and classes the arena tests run in twins: buffers that pickle out of
band (protocol 5), as numpy arrays do, without numpy (PyPy has none).

Imported by name in every interpreter; must import without pytest and run on Python
3.9 (PyPy)."""

import pickle

from cpy2py import _native


class Blob(object):
    """A bytearray that pickles its memory out of band from protocol 5 on."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return (blob_from, (pickle.PickleBuffer(self.data),))
        return (blob_from, (bytes(self.data),))

    def __eq__(self, other):
        return isinstance(other, Blob) and bytes(self.data) == bytes(other.data)

    def __hash__(self):
        return hash(bytes(self.data))


def blob_from(buffer):
    """Unpickles a Blob around the buffer as it arrived (no copy)."""
    return Blob(memoryview(buffer).cast("B"))


def pattern(size, seed):
    """A Blob of ``size`` bytes that differ from one seed to another."""
    block = bytes((seed + i) % 251 for i in range(4096))
    return Blob(bytearray((block * (size // 4096 + 1))[:size]))


def places_out_there():
    """Places of this twin's arena that the master holds."""
    return _native.arena_places_out(_native.MASTER_PEER)


def hold(count, size):
    """``count`` Blobs of ``size`` bytes, each its own pattern."""
    return [pattern(size, seed) for seed in range(count)]


def check(blobs, size):
    """Whether ``blobs`` are the patterns of ``hold``."""
    return [blob == pattern(size, seed) for seed, blob in enumerate(blobs)]


def overwrite(blob):
    """Writes into a received Blob's memory, and sends it back."""
    blob.data[:3] = b"abc"
    return blob


def echo(value):
    return value
