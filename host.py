"""What this machine's CPU reports: its flags from /proc/cpuinfo.

The choices made per host read them (precision.py's words on bfloat16,
rnn/fused_lstm.py's per-step products), never the host's name.
"""

import functools


@functools.cache
def cpu_flags():
    """The first processor's flags in /proc/cpuinfo as a tuple; () off Linux or without them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return tuple(line.partition(":")[2].split())
    except OSError:
        pass
    return ()
