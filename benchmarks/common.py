"""Plumbing the benchmark tools share: flag checks, child processes, host info, table cells."""

import dataclasses
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile

import tensorflow as tf

import configs
import errors
import host
from rnn import loop_forms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The command line entry point: the child processes (a measurement, a ceiling) run it.
SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")
DASH = "–"


class BenchmarkError(errors.UserError):
    """A bad flag value or missing data; the CLI prints it as one line and exits 2."""


# -------------------- flag checks

def split(text):
    """A comma list as its non-empty items, stripped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_configs(text):
    """--configs as config names, each checked (ConfigError lists the valid ones).

    Raises:
      BenchmarkError: nothing to run.
    """
    names = split(text)
    for name in names:
        configs.get_config(name)
    if not names:
        raise BenchmarkError(f"--configs is empty; choose from {', '.join(configs.CONFIGS)}")
    return names


def check_data(data_path):
    """Raises BenchmarkError unless data_path holds ptb.{train,valid,test}.txt."""
    missing = [name for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
               if not os.path.isfile(os.path.join(data_path, name))]
    if missing:
        raise BenchmarkError(f"no PTB data at --data_path={data_path} (missing "
                             f"{', '.join(missing)}); run scripts/get_ptb.sh or pass --data_path")


# -------------------- child processes

def rss_mb(max_rss):
    """ru_maxrss in MiB (Linux reports KiB, macOS bytes)."""
    return max_rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


@dataclasses.dataclass
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float  # the child's own peak (wait4), for peers that do not report theirs


def run_child(cmd, env=None):
    """Runs cmd to the end, capturing its output; wait4 gives that child's own peak RSS."""
    with tempfile.TemporaryFile("w+") as err:  # a file, so a chatty stderr cannot block the pipe
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        with proc.stdout:
            out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: Popen must not wait
        err.seek(0)
        return ChildRun(proc.returncode, out, err.read(), rss_mb(usage.ru_maxrss))


def child_result(run):
    """The JSON object on a successful child's last non-empty line of stdout, or None."""
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    if run.returncode != 0 or not lines:
        return None
    try:
        obj = json.loads(lines[-1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


# TensorFlow's and absl's log lines ("E0000 00:00:1733... 42 cuda_platform.cc:52] ...", or
# "2026-12-04 15:51:23.456789: W tensorflow/..."): not a reason while there is another line.
_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )")


def child_failure(run):
    """One line saying why a child failed: the signal that killed it, else its last line of
    stderr (or stdout), passing over TensorFlow's log lines while there are others."""
    if run.returncode < 0:
        try:
            name = signal.Signals(-run.returncode).name
        except ValueError:
            name = f"signal {-run.returncode}"
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    for text in (run.stderr, run.stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reasons = [line for line in lines if not _LOG_LINE.match(line)] or lines
        if reasons:
            return f"exit {run.returncode}: {reasons[-1]}"
    return f"exit {run.returncode}, no output"


def script_command(command, *flags):
    """The command line running this benchmark's `command` in a fresh Python process."""
    return [sys.executable, SCRIPT, command, *flags]


# -------------------- host

def _cpu_model():
    return host.cpuinfo().get("model name") or platform.processor() or platform.machine()


# Environment variables that cap the vector ISA a library's code uses (XLA's in XLA_FLAGS):
# a run under them measures that ISA's code on this CPU, not this CPU's best.
_ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
             "ATEN_CPU_CAPABILITY")


def isa_caps(environ=None):
    """The ISA caps set in the environment, {name: value}; XLA's as "xla_cpu_max_isa"."""
    environ = os.environ if environ is None else environ
    caps = {name: environ[name] for name in _ISA_CAPS if environ.get(name)}
    xla = loop_forms.xla_max_isa(environ.get("XLA_FLAGS", ""))
    return dict(caps, xla_cpu_max_isa=xla) if xla else caps


def host_info():
    """Date, host, CPU and versions: the head of every JSON summary."""
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": {"name": platform.node(), "cpu_model": _cpu_model(),
                     "cpu_vector_isa": host.vector_isa(), "isa_caps": isa_caps(),
                     "cpu_cores": os.cpu_count(), "platform": platform.platform()},
            "python": platform.python_version(), "tf_version": tf.__version__,
            "tf_cpu_allocator_use_bfc": os.environ["TF_CPU_ALLOCATOR_USE_BFC"]}


def print_summary(command, **fields):
    """Prints the JSON line that ends every command's output: host info, command, figures."""
    print(json.dumps(dict(host_info(), command=command, **fields)), flush=True)


# -------------------- table cells

def num(value, fmt="{:,.0f}"):
    return DASH if value is None else fmt.format(value)


def duration(seconds):
    return DASH if seconds is None else str(datetime.timedelta(seconds=round(seconds)))
