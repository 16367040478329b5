"""Functions the resource-limit tests (``test_limits``) run in twinterpreters.

Imported by name in every interpreter of a test run, so it must import without
pytest and run on Python 3.9 (PyPy).
"""

from cpy2py import twinfunction

#: flavour -> id of the twins that push large payloads at each other
CROSS_IDS = {"cpython": "cross-cpython", "pypy": "cross-pypy"}
#: id of the twin that keeps answering small calls meanwhile
BYSTANDER_ID = "cross-bystander"


@twinfunction(CROSS_IDS["cpython"])
def measure_in_cpython(data):
    return len(data), data[:1], data[-1:]


@twinfunction(CROSS_IDS["pypy"])
def measure_in_pypy(data):
    return len(data), data[:1], data[-1:]


MEASURE_IN = {"cpython": measure_in_cpython, "pypy": measure_in_pypy}


def push(flavour, size, rounds, fill):
    """Run in a twin: sends ``size`` bytes of ``fill`` to the ``flavour`` twin
    ``rounds`` times (forwarded by the master); what that twin saw each time."""
    data = bytes([fill]) * size
    return [MEASURE_IN[flavour](data) for _ in range(rounds)]


def noop():
    """The bystander's call."""


@twinfunction(BYSTANDER_ID)
def measure_in_bystander(data):
    return len(data)


def push_to_bystander(size):
    """Run in a twin: sends ``size`` bytes to the bystander (forwarded by the master)."""
    return measure_in_bystander(b"\x03" * size)


@twinfunction(CROSS_IDS["pypy"])
def where_in_pypy():
    import platform

    return platform.python_implementation()


def ask_pypy():
    """Run in a twin: a call to the PyPy twin (forwarded by the master)."""
    return where_in_pypy()


def _status_mib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no %s in /proc/self/status" % field)


def peak_rss_mib():
    """This process's peak resident set size since it started or since
    :func:`reset_peak_rss` (``VmHWM``), MiB."""
    return _status_mib("VmHWM")


def rss_mib():
    """This process's resident set size now (``VmRSS``), MiB."""
    return _status_mib("VmRSS")


def reset_peak_rss():
    """Makes the peak resident set size start again from the current one."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
