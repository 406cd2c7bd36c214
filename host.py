"""What this machine reports: the first processor's fields in /proc/cpuinfo, the caches
sysfs lists, and the physical memory.

The choices made per host read them (precision.py's words on bfloat16,
rnn/loop_forms.py's per-step products, training.py's overlap of the single stream's
stages), never the host's name; the benchmarks' reports and nominal peak read the rest,
and run.py's memory check the memory.
"""

import functools
import glob
import os


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


# Where the host does not say (sysfs absent), the cache of the hosts measured.
_DEFAULT_LAST_LEVEL_CACHE_BYTES = 32 << 20


def cache_size_bytes(text):
    """sysfs's cache size ("32768K", "1M", "512") in bytes; None if it is not one."""
    text = text.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    return int(digits) * scale if digits.isdigit() else None


def last_level_cache_bytes():
    """The largest CPU cache the first core reports in sysfs, in bytes; 32 MB where unknown."""
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(path) as f:
                sizes.append(cache_size_bytes(f.read()))
        except OSError:
            continue
    return max((size for size in sizes if size), default=_DEFAULT_LAST_LEVEL_CACHE_BYTES)


def physical_memory_bytes():
    """The machine's physical memory in bytes (POSIX sysconf)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cgroup_memory_limit_bytes(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup"):
    """The memory limit of this process's cgroup or any cgroup above it (v2 memory.max, v1
    memory.limit_in_bytes), the lowest, in bytes; None without one ("max", v1's huge
    "unlimited", or no cgroup files).

    A container's or a batch job's limit (often set on a parent: Slurm's job_N
    above its step) is below the machine's memory: the kernel kills a process
    that passes it, however much the machine has.
    """
    try:
        with open(proc_cgroup) as f:
            lines = [line.strip().split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return None
    limits = []
    for _, controllers, path in lines:
        if controllers == "":  # v2: one unified hierarchy
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):  # v1
            base, name = os.path.join(root, "memory"), "memory.limit_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):  # the cgroup, then each one above it
            limits.append(_read_limit(os.path.join(base, *parts[:depth], name)))
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


def _read_limit(path):
    """A cgroup memory limit file's value in bytes; None if absent, "max" or unlimited."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    limit = int(text) if text.isdigit() else None
    return limit if limit and limit < 1 << 60 else None  # v1's "unlimited" is ~2**63


def usable_memory_bytes():
    """The memory this process may use: the machine's, or its cgroup's limit if lower."""
    limit = cgroup_memory_limit_bytes()
    physical = physical_memory_bytes()
    return min(physical, limit) if limit else physical
