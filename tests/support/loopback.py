"""An aiohttp server on 127.0.0.1 in a background thread with its own event loop: the fakes' shared lifecycle.

The code under test (kopf in a KopfRunner thread, Google clients) talks to it over real HTTP, while
the test thread drives it; `start()` returns once it listens and re-raises why it could not.
Subclasses give `_serving()`: an async context manager that builds what they serve and yields an
aiohttp runner, set up, which this class binds to a free port.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self

import aiohttp.web


class LoopbackServer:
    label = "the server"  # for error messages and the thread's name

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._port = 0

    def _serving(self) -> AbstractAsyncContextManager[aiohttp.web.BaseRunner]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self.label} is already started")
        self._ready.clear()
        self._failure = None
        self._thread = threading.Thread(target=self._run, name=self.label.removeprefix("the "), daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError(f"{self.label} did not start within {self._startup_timeout}s")
        if self._failure is not None:
            raise RuntimeError(f"{self.label} failed to start") from self._failure
        return self

    def stop(self) -> None:
        """Close the listener (and whatever `_serving` opened) and join the thread."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)
        self._thread = None
        self._port = 0

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{self.label} is not running")
        return self._port

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start(); the thread must not die silently
            self._failure = error
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self._serving() as runner:
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._port = runner.addresses[0][1]
            self._ready.set()
            await self._stopping.wait()
