"""The service's port check before Ray starts: a listener holds the port, a killed service's lingering
TIME_WAIT connections do not (a `kill -9` then restart on the same port must work at once)."""

from __future__ import annotations

import socket

import pytest

from mlops_ray.errors import ServiceError
from mlops_ray.serve.runner import _check_port_free


def test_a_listening_socket_holds_the_port():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"serve.port {port} on 127.0.0.1 is in use"):
            _check_port_free("127.0.0.1", port)


def test_time_wait_connections_of_a_closed_server_do_not():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end (on the server's port) goes to TIME_WAIT
    cli.recv(1)
    cli.close()
    srv.close()
    with socket.socket() as plain:  # the state the check must tolerate: a bind without SO_REUSEADDR fails
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    _check_port_free("127.0.0.1", port)


def test_an_address_not_of_this_machine_is_a_clear_error():
    with pytest.raises(ServiceError, match="serve.port"):
        _check_port_free("192.0.2.1", 8000)
