"""files.py: a replaced file is the old text or the new, never part; staging directories and
directory swaps leave the earlier version whole."""

import errno
import fcntl
import os

import pytest

import files


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_replace_text_writes_the_text_with_the_umasks_mode(tmp_path, umask, mode):
    path = tmp_path / "m.json"
    path.write_text("old")
    previous = os.umask(umask)
    try:
        files.replace_text(str(path), "new ü\n")
        files.replace_text(str(path), "newer\n", tmp_path=f"{path}.tmp")  # a fixed name
    finally:
        os.umask(previous)
    assert path.read_text(encoding="utf-8") == "newer\n"
    assert path.stat().st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["m.json"]


def test_replace_text_failing_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    path.write_text("old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        files.replace_text(str(path), "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["m.json"]


def test_replace_text_syncs_the_directory_after_the_rename(tmp_path, monkeypatch):
    # Without it a power loss could bring back the old metrics.json after the run said done.
    path = tmp_path / "m.json"
    path.write_text("old")
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((target, path.read_text()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    files.replace_text(str(path), "new")
    assert synced[-1] == (str(tmp_path), "new")  # the directory, once the new text is in place


def test_staging_directory_removes_stale_ones_keeps_live_ones_and_its_own_on_exit(tmp_path):
    stale = tmp_path / ".stage.k1lled_x"
    (stale / "sub").mkdir(parents=True)
    live = tmp_path / ".stage.l1ve_xyz"
    live.mkdir()
    for staging in (stale, live):
        (staging / files._STAGING_MARKER).write_text("")
    # Not a staging directory (a user's, no marker), whatever its name: never touched.
    for name in (".stage.not-ours", ".stage.old", ".stage.previous"):
        (tmp_path / name).mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with files.staging_directory(str(tmp_path), ".stage.") as tmp:
            assert os.path.basename(tmp).startswith(".stage.") and os.path.isdir(tmp)
            assert not stale.exists() and live.exists()
            with open(os.path.join(tmp, "f"), "w") as f:
                f.write("x")
        assert not os.path.exists(tmp)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == [".stage.l1ve_xyz", ".stage.not-ours", ".stage.old",
                                            ".stage.previous"]


def test_staging_directory_is_removed_when_the_body_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with files.staging_directory(str(tmp_path / "new_parent"), ".stage.") as tmp:
            raise RuntimeError(tmp)
    assert os.listdir(tmp_path / "new_parent") == []


@pytest.mark.parametrize("renameat2", [True, False])
def test_swap_directories_exchanges_the_two(tmp_path, monkeypatch, renameat2):
    if not renameat2:  # a C library without it: the three renames
        monkeypatch.setattr(files.ctypes, "CDLL", lambda *a, **k: object())
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    (new / "v").write_text("new")
    (old / "v").write_text("old")
    files.swap_directories(str(new), str(old))
    assert (old / "v").read_text() == "new" and (new / "v").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["new", "old"]
