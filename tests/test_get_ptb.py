"""Tests for scripts/get_ptb.sh: each kind of source, idempotence, failures that change nothing."""

import contextlib
import filecmp
import functools
import hashlib
import http.server
import io
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import threading

import pytest

import reader

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "get_ptb.sh"
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
MEMBER_DIR = "simple-examples/data/"
FAKE = {name: f" not the {name} \n".encode() for name in PTB_FILES}
MARKER = ".ptb_verified"


def _run(*args, env=None, cwd=None):
    """Runs the script; PTB_SOURCE comes only from `env`, so the caller's shell cannot leak in."""
    full_env = {k: v for k, v in os.environ.items() if k != "PTB_SOURCE"}
    full_env.update(env or {})
    # The timeout only stops a hung test; nothing asserts on time.
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=full_env, cwd=cwd, check=False)


def _snapshot(root):
    """{relative path: (inode, mtime_ns, size)} of everything under root."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            result[os.path.relpath(path, root)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return result


def _make_tgz(path, members):
    """Writes a .tgz at path; members maps archive name -> bytes or a file to add."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, content in members.items():
            if isinstance(content, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.add(content, arcname=name)
    return path


def _ptb_members(ptb_dir, prefix="./", replace=None):
    """Archive members of the real files under prefix + MEMBER_DIR, plus a decoy.

    replace maps a file name to bytes that stand in for the real file.
    """
    members = {prefix + MEMBER_DIR + name: ptb_dir / name for name in PTB_FILES}
    members[prefix + MEMBER_DIR + "ptb.char.train.txt"] = b"decoy: must not be extracted\n"
    for name, content in (replace or {}).items():
        members[prefix + MEMBER_DIR + name] = content
    return members


def _assert_failed(result, *words):
    """Non-zero exit with a one-line, prefixed message on stderr containing words."""
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("get_ptb.sh: ")
    for word in words:
        assert word in last


def _assert_installed(data_dir, ptb_dir):
    """The real files, and the marker listing their SHA-256s in `sha256sum -c` format."""
    for name in PTB_FILES:
        assert filecmp.cmp(data_dir / name, ptb_dir / name, shallow=False)
    assert (data_dir / MARKER).read_text() == "".join(
        f"{hashlib.sha256((ptb_dir / name).read_bytes()).hexdigest()}  {name}\n"
        for name in PTB_FILES)


def _temporaries(root):
    """Paths of the script's temporaries (.get_ptb.*) anywhere under root."""
    return sorted(str(p) for p in pathlib.Path(root).rglob(".get_ptb.*"))


def _shim_bin(tmp_path, fake_mount=None):
    """A bin directory to put first on PATH, with wrappers the script calls by name.

    mv logs each call's arguments to <bin>/mv.log, and on the call numbered
    $KILL_AT (from 0) sends $KILL_SIGNAL to the script instead of moving.
    stat, if fake_mount is given, reports that directory on another device.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = bin_dir / "mv.log"
    (bin_dir / "mv").write_text(f"""#!/bin/sh
calls=$(cat '{log}' 2>/dev/null | wc -l)
echo "$*" >>'{log}'
if [ -n "${{KILL_AT:-}}" ] && [ "$calls" -eq "$KILL_AT" ]; then
  kill -s "$KILL_SIGNAL" "$PPID"
  exit 1
fi
exec '{shutil.which("mv")}' "$@"
""")
    if fake_mount is not None:
        (bin_dir / "stat").write_text(f"""#!/bin/sh
for last in "$@"; do :; done
if [ "$last" = '{fake_mount}' ]; then echo 99999; else exec '{shutil.which("stat")}' "$@"; fi
""")
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    return bin_dir


@pytest.fixture(scope="session", params=["./", ""], ids=["dot-slash", "bare"])
def ptb_tgz(request, tmp_path_factory, ptb_dir):
    """The real files in a .tgz laid out like simple-examples.tgz, members with/without './'."""
    path = tmp_path_factory.mktemp("tgz") / "simple-examples.tgz"
    return _make_tgz(path, _ptb_members(ptb_dir, prefix=request.param))


@pytest.fixture
def target(tmp_path):
    """An existing DATA_DIR holding an unrelated file and a stale ptb.valid.txt."""
    data_dir = tmp_path / "data" / "ptb"
    data_dir.mkdir(parents=True)
    (data_dir / "keep.txt").write_text("mine\n")
    (data_dir / "ptb.valid.txt").write_text("stale\n")
    return data_dir


@pytest.fixture
def serve(tmp_path):
    """Factory serve(file) -> http://127.0.0.1:<port>/<name> from a loopback server thread."""
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve_file(path):
        (root / path.name).write_bytes(path.read_bytes())
        return f"http://127.0.0.1:{server.server_address[1]}/{path.name}"

    yield serve_file
    server.shutdown()
    server.server_close()


def _closed_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- success -----------------------------------------------------------------------

def test_get_ptb_copies_directory_then_second_run_touches_nothing(ptb_dir, target):
    result = _run("--source", ptb_dir, target)
    assert result.returncode == 0, result.stderr
    _assert_installed(target, ptb_dir)
    assert (target / "keep.txt").read_text() == "mine\n"

    before = _snapshot(target.parent)
    again = _run("--source", ptb_dir, target)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert _snapshot(target.parent) == before


def test_get_ptb_takes_source_from_env(ptb_dir, tmp_path):
    result = _run(tmp_path / "ptb", env={"PTB_SOURCE": str(ptb_dir)})
    assert result.returncode == 0, result.stderr
    _assert_installed(tmp_path / "ptb", ptb_dir)


def test_get_ptb_takes_a_data_dir_starting_with_a_dash_after_double_dash(ptb_dir, tmp_path):
    refused = _run("-ptb", cwd=tmp_path)
    _assert_failed(refused, "a DATA_DIR starting with - goes after --")
    result = _run("--source", ptb_dir, "--", "-ptb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_installed(tmp_path / "-ptb", ptb_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["-ptb"]  # no temporaries left


def test_get_ptb_downloads_archive_over_http(ptb_dir, ptb_tgz, serve, target):
    result = _run("--source", serve(ptb_tgz), target)
    assert result.returncode == 0, result.stderr
    _assert_installed(target, ptb_dir)
    assert sorted(p.name for p in target.iterdir()) == sorted(("keep.txt", MARKER) + PTB_FILES)
    assert [p.name for p in target.parent.iterdir()] == ["ptb"]  # no temp dir or decoy left


def test_get_ptb_extracts_file_url_into_new_nested_dir(ptb_dir, ptb_tgz, tmp_path):
    data_dir = tmp_path / "new" / "deep" / "ptb"
    result = _run("--source", ptb_tgz.as_uri(), data_dir)
    assert result.returncode == 0, result.stderr
    _assert_installed(data_dir, ptb_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted((MARKER,) + PTB_FILES)
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["deep"]


def test_get_ptb_marks_verified_files_of_an_older_install(ptb_dir, target):
    for name in PTB_FILES:
        shutil.copyfile(ptb_dir / name, target / name)
    inodes = {name: (target / name).stat().st_ino for name in PTB_FILES}
    result = _run("--source", "/nonexistent", target)  # no fetch: the files are already right
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    _assert_installed(target, ptb_dir)
    assert inodes == {name: (target / name).stat().st_ino for name in PTB_FILES}


def test_get_ptb_help_prints_usage():
    result = _run("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: scripts/get_ptb.sh [--source SRC] [--] [DATA_DIR]")


# --- failure: nothing changes ----------------------------------------------------------

def test_get_ptb_wrong_content_archive_fails_naming_file(tmp_path, target):
    archive = _make_tgz(tmp_path / "fake.tgz", {"./" + MEMBER_DIR + n: c for n, c in FAKE.items()})
    before = _snapshot(target.parent)
    result = _run("--source", archive, target)
    _assert_failed(result, "checksum mismatch for ptb.train.txt", "not the Mikolov PTB data")
    assert _snapshot(target.parent) == before


def test_get_ptb_verifies_every_file_before_installing_any(ptb_dir, tmp_path, target):
    archive = _make_tgz(tmp_path / "bad_valid.tgz",
                        _ptb_members(ptb_dir, replace={"ptb.valid.txt": FAKE["ptb.valid.txt"]}))
    before = _snapshot(target.parent)
    result = _run("--source", archive, target)
    _assert_failed(result, "checksum mismatch for ptb.valid.txt")
    assert _snapshot(target.parent) == before  # the good ptb.train.txt was not moved in


def test_get_ptb_truncated_archive_fails(tmp_path, target):
    archive = _make_tgz(tmp_path / "full.tgz",
                        {"./" + MEMBER_DIR + n: os.urandom(1 << 16) for n in PTB_FILES})
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    before = _snapshot(target.parent)
    _assert_failed(_run("--source", truncated, target), "truncated or not a .tgz")
    assert _snapshot(target.parent) == before


def test_get_ptb_archive_missing_member_fails(tmp_path, target):
    archive = _make_tgz(tmp_path / "two.tgz",
                        {"./" + MEMBER_DIR + n: FAKE[n] for n in PTB_FILES[:2]})
    before = _snapshot(target.parent)
    _assert_failed(_run("--source", archive, target), "ptb.test.txt")
    assert _snapshot(target.parent) == before


def test_get_ptb_unreachable_url_fails(target):
    url = f"http://127.0.0.1:{_closed_port()}/x.tgz"
    before = _snapshot(target.parent)
    _assert_failed(_run("--source", url, target), "cannot download", url)
    assert _snapshot(target.parent) == before


def test_get_ptb_source_dir_missing_file_fails(tmp_path, target):
    source = tmp_path / "partial"
    source.mkdir()
    for name in PTB_FILES[:2]:
        (source / name).write_bytes(FAKE[name])
    before = _snapshot(target.parent)
    _assert_failed(_run("--source", source, target), "has no ptb.test.txt")
    assert _snapshot(target.parent) == before


def test_get_ptb_failure_creates_no_data_dir(tmp_path):
    archive = _make_tgz(tmp_path / "fake.tgz", {MEMBER_DIR + n: c for n, c in FAKE.items()})
    _assert_failed(_run("--source", archive, tmp_path / "new" / "ptb"), "checksum mismatch")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.tgz"]


def _path_without(tmp_path, *tools):
    """A PATH of one directory linking every command on ours but `tools`."""
    bin_dir = tmp_path / "without"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for entry in (os.scandir(directory) if os.path.isdir(directory) else ()):
            link = bin_dir / entry.name
            if entry.name not in tools and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    return str(bin_dir)


@pytest.mark.parametrize("missing, message", [
    (("tar",), "cannot unpack the archive: need tar and gzip on PATH"),
    (("md5sum", "md5", "python3"), "cannot check the files' MD5: need md5sum, md5 or python3"),
])
def test_get_ptb_names_a_missing_tool_before_any_work(target, tmp_path, missing, message):
    # Named before the archive is read: its content never matters (no PTB data needed).
    archive = _make_tgz(tmp_path / "fake.tgz", {"./" + MEMBER_DIR + n: c for n, c in FAKE.items()})
    before = _snapshot(target.parent)
    result = _run("--source", archive.as_uri(), target,
                  env={"PATH": _path_without(tmp_path, *missing)})
    _assert_failed(result, message)
    assert _snapshot(target.parent) == before


def test_get_ptb_refuses_an_empty_data_dir(tmp_path):
    # An unset variable: it silently became the default directory.
    for args in ([""], ["--", ""]):
        _assert_failed(_run("--source", tmp_path, *args), "DATA_DIR is empty")


def test_get_ptb_rejects_unknown_option(target):
    _assert_failed(_run("--frobnicate", target), "unknown option --frobnicate")


# --- interrupted runs: the next run finds a consistent state and finishes --------------

@pytest.mark.parametrize("kill_signal", ["KILL", "TERM"])
def test_get_ptb_killed_while_installing_never_leaves_a_set_that_loads(
        ptb_dir, target, tmp_path, kill_signal):
    # DATA_DIR holds a whole set of other files: a kill between the renames used
    # to leave new and old files mixed, which the reader loaded as a corpus.
    for name in PTB_FILES:
        (target / name).write_bytes(FAKE[name])
    old = {name: FAKE[name] for name in PTB_FILES}
    bin_dir = _shim_bin(tmp_path)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KILL_SIGNAL": kill_signal}
    moves = 1 + len(PTB_FILES)  # the marker, then each file
    for kill_at in range(moves):
        (bin_dir / "mv.log").unlink(missing_ok=True)
        killed = _run("--source", ptb_dir, target, env=dict(env, KILL_AT=str(kill_at)))
        assert killed.returncode == (143 if kill_signal == "TERM" else -9)  # 128 + SIGTERM
        assert len((bin_dir / "mv.log").read_text().splitlines()) == kill_at + 1
        if {name: (target / name).read_bytes() for name in PTB_FILES} != old:
            with pytest.raises(reader.DataError, match=f"rerun scripts/get_ptb.sh {target}$"):
                reader.load_corpus(target)
        if kill_signal == "KILL":  # no trap ran: the next run must clean up
            assert _temporaries(tmp_path)

        again = _run("--source", ptb_dir, target)
        assert again.returncode == 0, again.stderr
        _assert_installed(target, ptb_dir)
        assert _temporaries(tmp_path) == []
        assert (target / "keep.txt").read_text() == "mine\n"
        for name in PTB_FILES:  # back to the old set for the next kill point
            (target / name).write_bytes(FAKE[name])
        (target / MARKER).unlink()


def test_get_ptb_two_runs_into_a_new_data_dir_leave_one_set(ptb_dir, tmp_path):
    # Another run's rename makes DATA_DIR just before ours: mv then moved our staging
    # directory inside it, where it stayed (5.9 MB) and every later run found nothing to do.
    winner = tmp_path / "winner"
    assert _run("--source", ptb_dir, winner).returncode == 0
    bin_dir = tmp_path / "race"
    bin_dir.mkdir()
    (bin_dir / "mv").write_text(f"""#!/bin/sh
if [ "${{1##*/}}" = staged ] && [ ! -e "$2" ]; then cp -R '{winner}' "$2"; fi
exec '{shutil.which("mv")}' "$@"
""")
    (bin_dir / "mv").chmod(0o755)
    data_dir = tmp_path / "new" / "ptb"
    result = _run("--source", ptb_dir, data_dir,
                  env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    _assert_installed(data_dir, ptb_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted((MARKER,) + PTB_FILES)
    assert _temporaries(tmp_path) == []


def test_get_ptb_removes_temporaries_of_dead_runs_only(ptb_dir, target):
    host = os.uname().nodename
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parent = target.parent
    stale = [parent / f".get_ptb.{host}.{dead}.AbC123", parent / ".get_ptb.Old123"]
    live = [parent / f".get_ptb.{host}.{os.getpid()}.AbC123", parent / ".get_ptb.New123",
            parent / f".get_ptb.otherhost.{dead}.AbC123"]
    for path in stale + live:
        (path / "staged").mkdir(parents=True)
        (path / "staged" / "ptb.train.txt").write_bytes(b"partial")
    two_days_ago = (parent / ".get_ptb.Old123").stat().st_mtime - 2 * 86400
    os.utime(parent / ".get_ptb.Old123", (two_days_ago, two_days_ago))

    result = _run("--source", ptb_dir, target)
    assert result.returncode == 0, result.stderr
    _assert_installed(target, ptb_dir)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in live)  # a running process's, or too recent to tell
    assert result.stderr.count("left by an interrupted run") == 2


def test_get_ptb_stages_on_the_data_dirs_filesystem(ptb_dir, target, tmp_path):
    # DATA_DIR a mount point (a container volume): staging beside it would make
    # the final mv a copy, which a kill truncates.
    bin_dir = _shim_bin(tmp_path, fake_mount=target)
    result = _run("--source", ptb_dir, target,
                  env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    _assert_installed(target, ptb_dir)
    moves = (bin_dir / "mv.log").read_text().splitlines()
    assert len(moves) == 1 + len(PTB_FILES)
    assert all(move.startswith(f"-f {target}/.get_ptb.") for move in moves), moves
    assert _temporaries(tmp_path) == []
