"""Running the embedded server: `serve()` for serving/server.py, `serving_in_thread()` in-process.

`ServerOptions` holds tensorflow_model_server-like options (the flags of serving/server.py);
`serve` builds the model manager and the app from them, binds the socket itself (port 0: a free
one, which it logs) and runs uvicorn until SIGINT/SIGTERM. `serving_in_thread` serves any app on
a background thread for notebooks, tests and scripts driving the server from the same process.
Nothing happens at import time; TensorFlow is imported when the first model loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time

from glcic_tf.serving.app import DEFAULT_MAX_BODY_BYTES, create_app
from glcic_tf.serving.manager import ModelManager
from glcic_tf.serving.model_config import ModelConfig

logger = logging.getLogger("glcic_tf.serving")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """tensorflow_model_server-like options of the embedded server (see serving/server.py)."""

    models: tuple[ModelConfig, ...]
    rest_api_port: int = 8501
    rest_api_host: str = "127.0.0.1"
    file_system_poll_wait_seconds: float = 1.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    num_threads: int = 4
    rest_api_timeout_in_ms: int = 30_000
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0
    log_level: str = "info"
    access_log: bool = False
    ui: bool = True
    inbrowser: bool = False


def _bind(host: str, port: int):
    """A listening-ready TCP socket bound to host:port (port 0: a free one, read it back)."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


@contextlib.contextmanager
def serving_in_thread(app, host: str = "127.0.0.1", port: int = 0,
                      timeout_seconds: float = 120.0):
    """Serves an ASGI app with uvicorn in a background thread; yields its base URL.

    The socket is bound here and its port read back (port 0: any free one), so two callers
    never race for a probed port. For notebooks, tests and scripts that drive the server from
    the same process; the app's lifespan (model loading) runs before the URL is yielded.
    """
    import uvicorn

    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=sock.getsockname()[1],
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="glcic-serving", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_seconds
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the embedded server stopped while starting (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded server did not start in {timeout_seconds} s")
            time.sleep(0.02)
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        yield f"http://{shown}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_seconds)
        sock.close()


def serve(options: ServerOptions) -> None:
    """Loads the models and serves the REST API until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    logging.basicConfig(level=options.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.intra_op_parallelism or options.inter_op_parallelism:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_parallelism)
    manager = ModelManager(options.models, options.file_system_poll_wait_seconds)
    app = create_app(manager, max_body_bytes=options.max_body_bytes,
                     num_threads=options.num_threads,
                     timeout_seconds=options.rest_api_timeout_in_ms / 1000.0, ui=options.ui)
    sock = _bind(options.rest_api_host, options.rest_api_port)
    port = sock.getsockname()[1]  # the real one when --rest_api_port is 0
    logger.info("Serving %s on http://%s:%d/v1/models/...",
                ", ".join(m.name for m in options.models), options.rest_api_host, port)
    if options.ui:
        from glcic_tf.serving import page as ui_page

        logger.info("Completion page: %s", ui_page.page_url(options.rest_api_host, port))
        if options.inbrowser:
            ui_page.open_in_browser_when_up(options.rest_api_host, port)
    server = uvicorn.Server(uvicorn.Config(
        app, host=options.rest_api_host, port=port, log_level=options.log_level,
        access_log=options.access_log, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
