"""Run an ASGI app with uvicorn on a background thread, for tests, the demo and benchmarks."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI


class ThreadedServer:
    """``with ThreadedServer(app, port) as server:`` serves ``server.url`` until the block exits.

    Exit runs the app's shutdown (for the collector: the producer flush) and joins the thread.
    """

    def __init__(
        self, app: FastAPI, port: int, host: str = "127.0.0.1", startup_timeout_s: float = 30.0
    ) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{port}", daemon=True)
        self._startup_timeout_s = startup_timeout_s
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} stopped during startup (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not start in {self._startup_timeout_s}s")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
