"""host.py: the CPU's fields and flags as /proc/cpuinfo gives them, its caches as sysfs does."""

import pytest

import host

TWO_PROCESSORS = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2
"""


def test_parse_reads_the_first_processor_only():
    fields = host.parse_cpuinfo(TWO_PROCESSORS)
    assert fields["vendor_id"] == "AuthenticAMD"
    assert fields["cpu family"] == "25"
    assert fields["model name"] == "AMD EPYC"
    assert fields["cpu MHz"] == "2600.000"
    assert fields["flags"] == ("fpu", "sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16")


def test_parse_without_flags_gives_no_flags():
    assert host.parse_cpuinfo("processor\t: 0\nmodel name\t: x\n")["flags"] == ()
    assert host.parse_cpuinfo("")["flags"] == ()


def test_vector_isa_is_the_widest_extension():
    assert host.vector_isa(("sse2", "avx", "avx2", "avx512f")) == "AVX-512"
    assert host.vector_isa(("sse2", "avx", "avx2", "fma")) == "AVX2"
    assert host.vector_isa(("sse2", "avx")) == "AVX"
    assert host.vector_isa(("neon",)) == ""


def test_this_hosts_flags_are_the_parsed_ones():
    assert host.cpu_flags() == host.cpuinfo().get("flags", ())
    assert host.vector_isa() == host.vector_isa(host.cpu_flags())


def test_last_level_cache_bytes_takes_the_largest_readable_size(monkeypatch, tmp_path):
    for name, text in (("index0", "32K"), ("index2", "1024K"), ("index3", "32768K"),
                       ("index4", "junk")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(text + "\n")
    paths = [str(tmp_path / f"index{i}" / "size") for i in range(5)]  # index1: missing
    monkeypatch.setattr(host.glob, "glob", lambda pattern: paths)
    assert host.last_level_cache_bytes() == 32 << 20
    monkeypatch.setattr(host.glob, "glob", lambda pattern: paths[:2])
    assert host.last_level_cache_bytes() == 32 << 10
    monkeypatch.setattr(host.glob, "glob", lambda pattern: [])
    assert host.last_level_cache_bytes() == host._DEFAULT_LAST_LEVEL_CACHE_BYTES


@pytest.mark.parametrize("text, expected", [
    ("32768K\n", 32 << 20), ("1M", 1 << 20), ("2G", 2 << 30), ("512", 512), ("", None),
    ("K", None), ("12X", None)])
def test_cache_size_bytes_reads_sysfs_sizes(text, expected):
    assert host.cache_size_bytes(text) == expected


def test_physical_memory_bytes_is_the_kernels_memtotal():
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    kib = int(fields["MemTotal"].split()[0])
    assert host.physical_memory_bytes() == kib * 1024


@pytest.mark.parametrize("proc, files, limit", [
    ("0::/job\n", {"job/memory.max": "2147483648\n"}, 2 << 30),  # v2, the job's own cgroup
    ("0::/\n", {"memory.max": "max\n"}, None),  # v2 without a limit
    ("4:memory:/ctr\n0::/\n", {"memory/ctr/memory.limit_in_bytes": "1073741824"}, 1 << 30),  # v1
    ("4:memory:/ctr\n", {"memory/ctr/memory.limit_in_bytes": "9223372036854771712"}, None),
    ("4:cpu:/\n", {}, None),  # no memory controller
    # A limit on a parent (Slurm's job above its step), the leaf's "max": the parent's.
    ("0::/job_7/step_0\n", {"job_7/step_0/memory.max": "max", "job_7/memory.max": "1073741824",
                            "memory.max": "max"}, 1 << 30),
    ("0::/a/b\n", {"a/b/memory.max": "2147483648", "a/memory.max": "4294967296"}, 2 << 30),
])
def test_the_cgroup_memory_limit_is_read_from_v2_or_v1(tmp_path, proc, files, limit):
    (tmp_path / "cgroup").write_text(proc)
    for name, text in files.items():
        (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / name).write_text(text)
    assert host.cgroup_memory_limit_bytes(str(tmp_path / "cgroup"), str(tmp_path / "fs")) == limit


def test_usable_memory_is_the_lower_of_the_machines_and_the_limit(monkeypatch):
    monkeypatch.setattr(host, "cgroup_memory_limit_bytes", lambda: 1 << 30)
    assert host.usable_memory_bytes() == min(1 << 30, host.physical_memory_bytes())
    monkeypatch.setattr(host, "cgroup_memory_limit_bytes", lambda: None)
    assert host.usable_memory_bytes() == host.physical_memory_bytes()
