"""An S3-compatible server for the tests (loopback by default): moto's server app, one request at a time.

Why moto and not MinIO: no MinIO server can be installed from the package registries these tests
install from (PyPI's ``minio`` is a client; Debian ships only MinIO's Go libraries), while
``moto[server]`` is a pip package that speaks the S3 REST API over real HTTP, conditional writes
included (``If-Match`` / ``If-None-Match: *`` on PUT, ``If-Match`` on DELETE, in moto 5.2.6).

Why one request at a time: moto's handlers check a condition and then write in two steps, with no
lock between them, so two conditional PUTs of one key arriving together on its threaded server can
both pass the check; and a GET of a key being replaced can read the old object's closed buffer (a
500). Measured with 4 processes doing 240 compare-and-set increments and the server's thread switch
interval at 1e-5 s: 2 and 4 increments lost in two runs, plus 500s; serialised, none (at Python's
default interval one run lost none). S3 itself makes the check and the write one atomic step.
Serialising the requests (a lock around the WSGI app; the server stays threaded, so keep-alive
connections work) gives the tests S3's semantics, so the race tests exercise the client
(``S3StateStore``), not a gap in the emulator. ``serialise=False`` runs moto as it ships.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

ACCESS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@dataclass
class S3Server:
    """moto's S3 app on ``<host>:<free port>`` in a daemon thread (``host``: loopback unless a test needs
    another address, e.g. a private one that processes in a network namespace reach)."""

    serialise: bool = True
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free one; a port chosen earlier when the endpoint must be known before the server starts
    endpoint_url: str = ""
    _server: object = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> S3Server:
        from moto.server import create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            disable_nagle_algorithm = True  # small responses written in pieces: no 40 ms delayed-ACK stalls

            def log(self, type, message, *args):  # no access log on the test's stderr
                pass

        app = create_backend_app("s3")  # S3 only, as `moto_server s3`: no per-request service dispatch
        if self.serialise:
            one_at_a_time = threading.Lock()
            moto_app = app

            def app(environ, start_response):
                with one_at_a_time:
                    return list(moto_app(environ, start_response))  # the whole body inside the lock

        self._server = make_server(self.host, self.port, app, threaded=True, request_handler=Quiet)
        port = self._server.server_address[1]
        self.endpoint_url = f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, **ACCESS)
