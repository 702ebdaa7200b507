"""The web app's warehouse reads: one read-only DuckDB connection kept open between requests.

Opening the file took about 200 ms per request, and a fresh connection starts with a cold
buffer cache, so every card paid for both. The connection is now kept while requests come:

* reads are serialised with the service's writes (``svc.write_lock``): DuckDB refuses a
  read-only and a read-write handle on one file in one process at the same time;
* the service's writes (``/feedback``, the card's accept / reject) close it first: the
  service owns the reader and its ``write_lock`` is a lock that closes the reader when it is
  taken (both made at start-up by :func:`serialised_reader`; closed at shutdown);
* after ``IDLE_SECONDS`` without a read it is closed, so that another process (a daily job
  writing ``customer_segments``) can open the file for writing between bursts of use.
"""

from __future__ import annotations

import threading
import time
from typing import Any

IDLE_SECONDS = 10.0


class Reader:
    """A lazily opened read-only connection to ``path``; :meth:`run` calls
    ``fn(con, *args)`` on it under ``lock``."""

    def __init__(self, path: str, lock: Any) -> None:
        self.path = path
        self.lock = lock
        self.con = None
        self.last_used = 0.0
        self._timer: threading.Timer | None = None

    def run(self, fn, *args, **kwargs):
        from customer360.data.warehouse import connect

        with self.lock:
            if self.con is None:
                self.con = connect(self.path, read_only=True)
            self.last_used = time.monotonic()
            self._arm()
            return fn(self.con, *args, **kwargs)

    def close(self) -> None:
        """Close the connection (caller holds ``lock``)."""
        if self.con is not None:
            self.con.close()
            self.con = None

    def _arm(self) -> None:
        if self._timer is None or not self._timer.is_alive():
            self._timer = threading.Timer(IDLE_SECONDS, self._close_if_idle)
            self._timer.daemon = True
            self._timer.start()

    def _close_if_idle(self) -> None:
        with self.lock:
            if time.monotonic() - self.last_used >= IDLE_SECONDS:
                self.close()
            else:
                self._timer = None
                self._arm()


class ClosingLock:
    """The service's write lock, closing the reader whenever a writer takes it."""

    def __init__(self, inner: Any, reader: Reader) -> None:
        self.inner = inner
        self.reader = reader

    def __enter__(self):
        self.inner.__enter__()
        self.reader.close()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)


def serialised_reader(path: str) -> tuple[Reader, ClosingLock]:
    """The service's reader of ``path`` and its write lock (a writer that takes it closes the
    reader first); the service creates both at start-up and owns them (review 2)."""
    reader = Reader(path, threading.Lock())
    return reader, ClosingLock(reader.lock, reader)


def reader_of(svc: Any) -> Reader:
    """The reader of the running service (made with its write lock by the service)."""
    return svc.reader
