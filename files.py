"""Writes that never leave a half-written file or a missing directory behind.

    files.replace_text(path, text)            # path holds the old text or the new, never part
    with files.staging_directory(parent, ".export.") as tmp:
        ...                                     # build a directory in tmp
        files.swap_directories(new, old)        # old's name now holds new, at once

A run's metrics, the vocabulary and the SavedModel export are written here, so
that a kill, a full disk or a second writer at any moment leaves the earlier
version whole.
"""

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>
_STAGING_MARKER = ".staging"  # in every staging directory: only those are ever removed


def replace_text(path, text, prefix=".tmp.", tmp_path=None):
    """Replaces path with text (UTF-8, mode 0666 less the umask) in one rename.

    The text goes to a temporary file beside path, synced to disk, then renamed
    over it, and the directory synced; on any failure the temporary file is
    removed and path is untouched.
    tmp_path: that file's name, for a writer that holds a lock (a kill then leaves
    one file that the next write replaces); else a new unique name with `prefix`.

    Raises:
      OSError: the directory cannot be written (a full disk, permissions).
    """
    if tmp_path is None:
        fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                        prefix=prefix)
    else:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # as open() would make it; mkstemp's is 0600
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        raise
    sync_directory(os.path.dirname(os.path.abspath(path)))


def sync_directory(path):
    """Syncs a directory's entries to disk, so that a rename in it outlives a power loss
    (without it the old name may come back). Filesystems that cannot sync a directory
    (EINVAL) are left as they are: the rename itself is already done."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def silence(stream):
    """Points a stream's file descriptor at /dev/null: once its reader is gone, later
    writes (and Python's final flush) succeed and go nowhere. A stream without one is left."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        pass
    finally:
        os.close(devnull)


def _umask():
    """The process's umask, read without setting it where Linux shows it (os.umask would
    clear it for a moment, for every thread: TensorFlow's may be writing files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staging_directory(parent, prefix):
    """A new directory in parent, named prefix + tempfile's letters, removed on exit.

    The directory is flocked while in use and holds a marker file. Directories
    of the same prefix with the marker that nobody holds (left by a process
    killed mid-way) are removed first, and only those: a live writer's is kept,
    and a user's own `.export.previous` (no marker) is never touched.
    """
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, prefix)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        open(os.path.join(tmp, _STAGING_MARKER), "w").close()
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


def _remove_stale(parent, prefix):
    """Removes parent's prefix + 8 letters directories (mkdtemp's names) that hold the
    staging marker and whose flock nobody holds."""
    staging = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}")  # mkdtemp's names, no others
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if (not staging.fullmatch(name) or os.path.islink(path) or not os.path.isdir(path)
                or not os.path.isfile(os.path.join(path, _STAGING_MARKER))):
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer's
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def swap_directories(new, old):
    """Swaps two directories in one step (Linux renameat2), so old's name is never missing.

    Where the kernel or filesystem cannot, falls back to three renames.
    """
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                              ctypes.c_uint]
        if renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old),
                     _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), old)
    aside = f"{new}.old"
    os.rename(old, aside)
    os.rename(new, old)
    os.rename(aside, new)
