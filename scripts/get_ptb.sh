#!/usr/bin/env bash
# Puts Mikolov's PTB files into DATA_DIR: fetched, MD5-verified, then renamed into place.
#
# Beside them goes .ptb_verified (their SHA-256s, `sha256sum -c` format): reader.py
# then checks every PTB file it loads from DATA_DIR against those checksums. It is
# renamed in before the files, so a run killed between the renames leaves a
# directory the reader refuses and the next run completes, never a silent mix.
# The staging directory (.get_ptb.HOST.PID.XXXXXX) is on DATA_DIR's filesystem,
# so installing is renames, not copies; ones left by killed runs are removed.
#
# Written for bash 3.2+ (macOS) as well as Linux: no associative arrays, and
# md5sum / md5 / python3 and curl / wget / python3 are each tried in turn.
set -euo pipefail

readonly PROG="get_ptb.sh"
readonly DEFAULT_SOURCE="http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
readonly FILES="ptb.train.txt ptb.valid.txt ptb.test.txt"
readonly MEMBER_DIR="simple-examples/data"
readonly MARKER=".ptb_verified"   # reader.PTB_VERIFIED_MARKER
readonly TMP_PREFIX=".get_ptb."   # staging directories and files, removed when stale
readonly STALE_MINUTES=1440       # any older temporary is stale, whichever run made it
readonly CONNECT_TIMEOUT=20  # seconds to reach the server
readonly STALL_TIMEOUT=60    # seconds below 1 KB/s before a download is abandoned
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO

usage() {
  cat <<EOF
Usage: scripts/get_ptb.sh [--source SRC] [--] [DATA_DIR]

Puts ptb.train.txt, ptb.valid.txt and ptb.test.txt into DATA_DIR
(default: $REPO/data/ptb, where ptb_word_lm.py looks) and checks their MD5s,
with $MARKER (their SHA-256s) that tells ptb_word_lm.py to check them too.
Does nothing if they are already there and correct. On any failure DATA_DIR
is left exactly as it was; if the run is killed while installing, the next
run finishes the job and removes what the killed run left behind.

SRC (default: \$PTB_SOURCE, else $DEFAULT_SOURCE) is one of:
  a directory holding the three files     (copied)
  a .tgz path or file:// URL              (the three files extracted)
  an http:// or https:// URL of the .tgz  (downloaded with curl, wget or python3)
The archive members must be [./]$MEMBER_DIR/ptb.{train,valid,test}.txt.
EOF
}

die() {
  echo "$PROG: $*" >&2
  exit 1
}

expected_md5() {
  case "$1" in
    ptb.train.txt) echo f26c4b92c5fdc7b3f8c7cdcb991d8420 ;;
    ptb.valid.txt) echo aa0affc06ff7c36e977d7cd49e3839bf ;;
    ptb.test.txt) echo 8b80168b89c18661a38ef683c0dc3721 ;;
    *) die "internal error: no checksum for $1" ;;
  esac
}

expected_sha256() {
  case "$1" in
    ptb.train.txt) echo fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf ;;
    ptb.valid.txt) echo c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2 ;;
    ptb.test.txt) echo dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0 ;;
    *) die "internal error: no checksum for $1" ;;
  esac
}

# The marker's text: the SHA-256 of each file that matched its MD5.
marker_text() {
  local f
  for f in $FILES; do echo "$(expected_sha256 "$f")  $f"; done
}

md5_of() {
  if command -v md5sum >/dev/null 2>&1; then
    md5sum <"$1" | cut -d' ' -f1  # stdin, so odd file names cannot change the output
  elif command -v md5 >/dev/null 2>&1; then
    md5 -q <"$1"
  else
    command -v python3 >/dev/null 2>&1 || return 1
    python3 -c 'import hashlib, sys; print(hashlib.md5(sys.stdin.buffer.read()).hexdigest())' <"$1"
  fi
}

# True if $1 holds all three files as regular files with the right checksums.
all_verified() {
  local f
  for f in $FILES; do
    [ -f "$1/$f" ] && [ ! -L "$1/$f" ] || return 1
    [ "$(md5_of "$1/$f")" = "$(expected_md5 "$f")" ] || return 1
  done
}

# Dies naming the first file in $1 that is missing or has the wrong checksum.
verify_or_die() {
  local f got want
  for f in $FILES; do
    [ -f "$1/$f" ] && [ ! -L "$1/$f" ] || die "$f is missing or not a regular file in the source"
    got="$(md5_of "$1/$f")" || die "cannot compute the MD5 of $f: need md5sum, md5 or python3"
    want="$(expected_md5 "$f")"
    [ "$got" = "$want" ] ||
      die "checksum mismatch for $f (got $got, expected $want):" \
        "the source is not the Mikolov PTB data"
  done
}

# The nearest directory at or above $1 that exists (so a failed run creates nothing).
existing_ancestor() {
  local d="$1"
  while [ ! -d "$d" ]; do d="$(dirname "$d")"; done
  echo "$d"
}

device_of() {
  stat -c %d "$1" 2>/dev/null || stat -f %d "$1" 2>/dev/null  # GNU, else BSD
}

# Where to stage: beside DATA_DIR, so that installing is a rename; inside it when
# it is a mount point (a container volume), whose parent is another filesystem
# (there mv would copy, and a kill would leave a truncated file).
staging_parent() {
  local data_dir="$1" parent
  parent="$(existing_ancestor "$(dirname "$data_dir")")"
  if [ -d "$data_dir" ] && [ "$(device_of "$data_dir")" != "$(device_of "$parent")" ]; then
    echo "$data_dir"
  else
    echo "$parent"
  fi
}

# True if process $1 exists (EPERM from kill means it does, as another user's).
pid_alive() {
  local err
  err="$(kill -0 "$1" 2>&1)" && return 0
  case "$err" in *ermitted*) return 0 ;; esac
  return 1
}

# Removes, in directory $1, the temporaries of runs that are over: this host's
# whose process has exited (SIGKILL skips the cleanup trap), and any older
# than STALE_MINUTES (other hosts', or from before names carried a pid).
remove_stale() {
  local dir="$1" path name rest pid
  [ -d "$dir" ] || return 0
  for path in "$dir/$TMP_PREFIX"*; do
    [ -e "$path" ] || [ -L "$path" ] || continue  # the pattern matched nothing
    name="${path##*/}"
    rest="${name#"$TMP_PREFIX$HOST."}"
    pid="${rest%%.*}"
    if [ "$rest" != "$name" ] && [ -n "$pid" ] && [ -z "${pid//[0-9]/}" ]; then
      pid_alive "$pid" && continue
    elif [ -z "$(find "$path" -prune -mmin +"$STALE_MINUTES" 2>/dev/null)" ]; then
      continue
    fi
    if rm -rf "$path" 2>/dev/null; then
      echo "$PROG: removed $path, left by an interrupted run" >&2
    fi
  done
}

# Writes the marker into verified DATA_DIR $1 if it lacks it (an older install);
# only warns if it cannot (a read-only copy): the files themselves are fine.
ensure_marker() {
  local tmp="$1/$TMP_PREFIX$HOST.$$.marker"
  [ "$(cat "$1/$MARKER" 2>/dev/null)" = "$(marker_text)" ] && return 0
  if { marker_text >"$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$1/$MARKER"; } 2>/dev/null; then
    echo "$PROG: wrote $1/$MARKER, so ptb_word_lm.py checks the files"
  else
    rm -f "$tmp" 2>/dev/null || true
    echo "$PROG: warning: cannot write $1/$MARKER (read-only?); the files are verified" >&2
  fi
}

# download URL OUT: curl, else wget, else python3; dies with one line on failure.
download() {
  local url="$1" out="$2" err="$WORK/download.err"
  echo "$PROG: downloading $url" >&2
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --connect-timeout "$CONNECT_TIMEOUT" \
      --speed-limit 1024 --speed-time "$STALL_TIMEOUT" -o "$out" "$url" 2>"$err" ||
      die "cannot download $url: $(tail -n 1 "$err")"
  elif command -v wget >/dev/null 2>&1; then
    # wget retries 20 times by default and waits 900 s per read: bound both.
    wget --quiet --tries=1 --timeout="$STALL_TIMEOUT" -O "$out" "$url" 2>"$err" ||
      die "cannot download $url (wget exit $?)"
  else
    python3 - "$url" "$out" "$CONNECT_TIMEOUT" 2>"$err" <<'PY' ||
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[3])) as r:
    with open(sys.argv[2], "wb") as f:
        shutil.copyfileobj(r, f)
PY
      die "cannot download $url: $(tail -n 1 "$err")"
  fi
}

# extract ARCHIVE OUT_DIR: only the three members, with or without a leading "./".
extract() {
  local archive="$1" out="$2" listing="$WORK/listing" err="$WORK/tar.err"
  local f name candidate members=""
  # Listing reads the whole stream, so a truncated or corrupt archive fails here.
  tar -tzf "$archive" >"$listing" 2>"$err" ||
    die "cannot read archive $archive (truncated or not a .tgz): $(tail -n 1 "$err")"
  for f in $FILES; do
    name=""
    for candidate in "./$MEMBER_DIR/$f" "$MEMBER_DIR/$f"; do
      if grep -qxF "$candidate" "$listing"; then name="$candidate"; break; fi
    done
    [ -n "$name" ] ||
      die "archive $archive has no $MEMBER_DIR/$f: it is not Mikolov's simple-examples.tgz"
    members="$members $name"
  done
  # shellcheck disable=SC2086  # member names hold no spaces
  tar -xzf "$archive" -C "$WORK/extract" $members 2>"$err" ||
    die "cannot extract from archive $archive: $(tail -n 1 "$err")"
  for f in $FILES; do mv "$WORK/extract/$MEMBER_DIR/$f" "$out/$f"; done
}

# fetch SOURCE OUT_DIR: puts the three (unverified) files into OUT_DIR.
fetch() {
  local src="$1" out="$2" f
  case "$src" in
    http://* | https://*)
      need_tar
      download "$src" "$WORK/archive.tgz"
      extract "$WORK/archive.tgz" "$out"
      ;;
    file://*)
      src="${src#file://}"
      src="${src#localhost}"
      [ -f "$src" ] || die "archive not found: $src (from file:// URL)"
      need_tar
      extract "$src" "$out"
      ;;
    *)
      if [ -d "$src" ]; then
        for f in $FILES; do
          [ -f "$src/$f" ] || die "source directory $src has no $f"
          cp "$src/$f" "$out/$f"
        done
      elif [ -f "$src" ]; then
        need_tar
        extract "$src" "$out"
      else
        die "source not found: $src (expected a directory, a .tgz, or a file:// or http(s):// URL)"
      fi
      ;;
  esac
}

# install STAGED_DIR DATA_DIR: renames the verified files and the marker into place.
install_files() {
  local staged="$1" dest="$2" f
  if [ -e "$dest" ]; then
    # The marker first: from then on the reader checks each file against it, so
    # a kill between these renames leaves DATA_DIR refused until the next run
    # completes it, never a set of new and old files that loads.
    mv -f "$staged/$MARKER" "$dest/$MARKER"
    for f in $FILES; do mv -f "$staged/$f" "$dest/$f"; done
  else
    mkdir -p "$(dirname "$dest")"
    mv "$staged" "$dest"  # one rename: the directory appears complete or not at all
    if [ -d "$dest/$(basename "$staged")" ]; then
      # Another run's rename made DEST first, and mv put ours inside it: theirs is
      # complete; ours replaces its files as above, and nothing of ours stays there.
      install_files "$dest/$(basename "$staged")" "$dest"
      rmdir "$dest/$(basename "$staged")"
    fi
  fi
}

# need_md5: dies unless a tool to check the files' MD5 is there (before any work).
need_md5() {
  command -v md5sum >/dev/null 2>&1 || command -v md5 >/dev/null 2>&1 ||
    command -v python3 >/dev/null 2>&1 ||
    die "cannot check the files' MD5: need md5sum, md5 or python3 on PATH"
}

# need_tar: dies unless an archive can be unpacked (before it is downloaded).
need_tar() {
  command -v tar >/dev/null 2>&1 && command -v gzip >/dev/null 2>&1 ||
    die "cannot unpack the archive: need tar and gzip on PATH (or --source=DIR with the three files)"
}

main() {
  local source="${PTB_SOURCE:-$DEFAULT_SOURCE}" data_dir="" given=0
  while [ $# -gt 0 ]; do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --source)
        [ $# -ge 2 ] || die "--source needs a value (see --help)"
        source="$2"
        shift 2
        ;;
      --source=*) source="${1#--source=}"; shift ;;
      --)
        shift
        [ $# -eq 0 ] && break
        [ $# -eq 1 ] && [ "$given" = 0 ] || die "only one DATA_DIR may be given (see --help)"
        data_dir="$1" given=1
        break
        ;;
      -*) die "unknown option $1 (a DATA_DIR starting with - goes after --; see --help)" ;;
      *)
        [ "$given" = 0 ] || die "only one DATA_DIR may be given (see --help)"
        data_dir="$1" given=1
        shift
        ;;
    esac
  done
  [ "$given" = 0 ] || [ -n "$data_dir" ] ||
    die "DATA_DIR is empty (an unset variable?); leave it out for $REPO/data/ptb"
  data_dir="${data_dir:-$REPO/data/ptb}"
  case "$data_dir" in -*) data_dir="./$data_dir" ;; esac  # never read as an option by mkdir, mv...
  [ ! -e "$data_dir" ] || [ -d "$data_dir" ] ||
    die "DATA_DIR $data_dir exists and is not a directory"

  HOST="$(uname -n)"
  local staging
  staging="$(staging_parent "$data_dir")"
  remove_stale "$staging"
  [ "$staging" = "$data_dir" ] || remove_stale "$data_dir"

  need_md5
  if all_verified "$data_dir"; then
    ensure_marker "$data_dir"
    echo "$PROG: $data_dir already holds the verified PTB files; nothing to do"
    exit 0
  fi

  # The pid in the name tells a later run whether this one is still going.
  WORK="$(mktemp -d "$staging/$TMP_PREFIX$HOST.$$.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  # exit (128 + the signal's number), so that the EXIT trap cleans up on a signal too
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir "$WORK/staged" "$WORK/extract"
  fetch "$source" "$WORK/staged"
  verify_or_die "$WORK/staged"
  marker_text >"$WORK/staged/$MARKER"
  # 644: copies of a read-only source stay writable.
  chmod 644 "$WORK/staged"/ptb.*.txt "$WORK/staged/$MARKER"
  install_files "$WORK/staged" "$data_dir"
  echo "$PROG: installed $FILES in $data_dir (MD5 verified)"
}

main "$@"
