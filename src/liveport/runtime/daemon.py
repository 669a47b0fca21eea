"""Daemon options with OVS's meanings: `--pidfile[=FILE]`, `--overwrite-pidfile`,
`--detach`, `--no-chdir`, and the run and log directories their defaults live in.

- Run directory: `$LIVEPORT_RUNDIR` or /run/liveport (pidfiles, control sockets); log
  directory: `$LIVEPORT_LOGDIR` or /var/log/liveport. `--pidfile` alone means
  `<rundir>/<program>.pid`, `--log-file` alone `<logdir>/<program>.log`.
- The pidfile is written as OVS writes it: into `<pidfile>.tmp`, locked (a POSIX record
  lock, which OVS's tools also test), checked against a running instance (another process
  holding the lock on the pidfile: refused with its PID), then renamed into place; the
  descriptor stays open for the daemon's life so the lock holds, and the file is removed at
  exit if it is still ours. `--overwrite-pidfile` skips the check (OVS's meaning: a
  supervisor that knows better).
- `--detach`: fork; the child starts a new session (setsid) and does its start-up (pidfile,
  log file, control socket, metrics endpoint); the parent waits and exits only once the
  child says it is ready (status 0), or with the child's error line and exit status. The
  ready child changes to / (unless `--no-chdir`) and points stdin, stdout and stderr at
  /dev/null. A systemd unit of Type=forking with PIDFile= relies on exactly this.

Left out, with why: OVS's `--monitor` (restart on crash: systemd's Restart= does it),
`--user` (dropping privileges: systemd's User=), the pidfile's inode check before
unlinking on every signal path (we unlink at a normal exit and on SIGTERM/SIGINT, which the
daemons turn into a normal exit).

Fork before any thread starts: everything here runs in the main thread, before the daemon
creates its database clients, its control thread or its event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from liveport.model.errors import FAILED, Conflict, InvalidInput, LiveportError

RUNDIR_ENV: Final = "LIVEPORT_RUNDIR"
LOGDIR_ENV: Final = "LIVEPORT_LOGDIR"
DEFAULT_RUNDIR: Final = Path("/run/liveport")
DEFAULT_LOGDIR: Final = Path("/var/log/liveport")


def rundir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(RUNDIR_ENV) or DEFAULT_RUNDIR).absolute()


def logdir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(LOGDIR_ENV) or DEFAULT_LOGDIR).absolute()


def default_pidfile(program: str, env: Mapping[str, str] = os.environ) -> Path:
    return rundir(env) / f"{program}.pid"


def default_log_file(program: str, env: Mapping[str, str] = os.environ) -> Path:
    return logdir(env) / f"{program}.log"


# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t
# l_pid (native alignment), padded to 32 bytes.
_FLOCK = "hhqqi"
_FLOCK_SIZE = 32


def lock_holder(path: Path) -> int | None:
    """The PID of the process holding the write lock on path (None: nobody, or no file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        request = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        request += b"\0" * (_FLOCK_SIZE - len(request))
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, request)
        l_type, _, _, _, l_pid = struct.unpack(_FLOCK, answer[: struct.calcsize(_FLOCK)])
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(l_pid) if l_type != fcntl.F_UNLCK else None


def running_pid(path: Path) -> int | None:
    """The PID of the daemon that holds pidfile path, if one is running."""
    return lock_holder(path)


class Pidfile:
    """A daemon's pidfile, created and locked as OVS does it (see the module docstring)."""

    def __init__(self, path: Path, *, overwrite: bool = False) -> None:
        self.path = path.absolute()
        self.overwrite = overwrite
        self._fd: int | None = None
        self._ino: int | None = None

    def create(self) -> None:
        pid = os.getpid()
        tmp = self.path.with_name(
            f"{self.path.name}.tmp{pid}" if self.overwrite else f"{self.path.name}.tmp"
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise InvalidInput(f"{tmp}: create failed ({exc.strerror})") from None
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = lock_holder(tmp)
                raise Conflict(
                    f"{tmp} is locked by pid {holder or '?'}: another instance is starting"
                ) from None
            if not self.overwrite:
                holder = lock_holder(self.path)
                if holder is not None and holder != pid:
                    raise Conflict(f"{self.path}: already running as pid {holder}, aborting")
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{pid}\n".encode())
                os.replace(tmp, self.path)
            except OSError as exc:
                raise LiveportError(
                    f"{self.path}: cannot write the pidfile ({exc.strerror})"
                ) from None
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                if self.overwrite or lock_holder(tmp) in (None, pid):
                    tmp.unlink()
            raise
        self._fd = fd
        self._ino = os.fstat(fd).st_ino

    def remove(self) -> None:
        """Removes the pidfile if it is still the one we wrote (and releases the lock)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._ino:
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None


class Detacher:
    """--detach: fork, and let the parent exit once the child is ready."""

    def __init__(self, program: str, *, chdir: bool = True) -> None:
        self.program = program
        self.chdir = chdir
        self._notify: int | None = None

    @property
    def detached(self) -> bool:
        return self._notify is not None

    def start(self) -> None:
        """Forks. Only the child returns; the parent waits for its word and exits."""
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        child = os.fork()
        if child:
            os.close(write_end)
            os._exit(self._wait(read_end, child))
        os.close(read_end)
        self._notify = write_end
        os.setsid()

    def _wait(self, read_end: int, child: int) -> int:
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
        os.close(read_end)
        word = b"".join(chunks).decode(errors="replace")
        if word.startswith("ok"):
            return 0
        if word:
            code, _, message = word.partition(" ")
            sys.stderr.write(f"{self.program}: error: {message.strip()}\n")
            sys.stderr.flush()
            return int(code) if code.isdigit() else FAILED
        _, status = os.waitpid(child, 0)
        if os.WIFSIGNALED(status):
            why = f"killed by signal {os.WTERMSIG(status)}"
        else:
            why = f"exit status {os.waitstatus_to_exitcode(status)}"
        sys.stderr.write(f"{self.program}: error: the daemon died while starting ({why})\n")
        sys.stderr.flush()
        return FAILED

    def ready(self) -> None:
        """The child finished starting: the parent exits 0; the child leaves the
        directory it was started in and its standard descriptors."""
        if self._notify is None:
            return
        os.write(self._notify, b"ok\n")
        os.close(self._notify)
        self._notify = None
        if self.chdir:
            os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)

    def failed(self, message: str, code: int) -> bool:
        """The child failed to start: the parent prints message and exits with code. False
        when there is no parent waiting (not detached, or already ready)."""
        if self._notify is None:
            return False
        with contextlib.suppress(OSError):
            os.write(self._notify, f"{code} {message}".encode())
            os.close(self._notify)
        self._notify = None
        return True
