"""stateDir/agent.lock: the flock held by the live agent, and the liveness test built on it."""

import errno
import fcntl
import os

from .util import remove_quietly


class Lock:
    """flock on stateDir/agent.lock; survives unlink races by re-checking the inode."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self):
        """True once held; False at once when another process holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)

    def release(self):
        if self.fd is not None:
            remove_quietly(self.path)
            os.close(self.fd)
            self.fd = None


def lock_held(path):
    """True when some live process holds the flock on path."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
