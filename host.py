"""What this machine's CPU reports: the first processor's fields in /proc/cpuinfo.

The choices made per host read its flags (precision.py's words on bfloat16,
rnn/fused_lstm.py's per-step products), never the host's name; the
benchmarks' reports and nominal peak read the rest.
"""

import functools


@functools.cache
def cpuinfo():
    """The first processor's fields in /proc/cpuinfo (parse_cpuinfo); {} off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return {}


def parse_cpuinfo(text):
    """The first processor's `key : value` fields of a /proc/cpuinfo text, its flags a tuple."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the end of the first processor
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    fields["flags"] = tuple(fields.get("flags", "").split())
    return fields


def cpu_flags():
    """The first processor's flags as a tuple; () off Linux or without them."""
    return cpuinfo().get("flags", ())


def vector_isa(flags=None):
    """The widest x86 vector extension among `flags` (AVX-512, AVX2, ...), or "" if none.

    Recorded with every speed figure because it moves our ratios to the peers:
    XLA's matmuls and the peers' reach different fractions of peak on AVX2 and
    AVX-512 hosts. flags: None reads this CPU's.
    """
    flags = cpu_flags() if flags is None else flags
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return ""
