"""ServerProcess ports: never one a killed server's clients could find on another server."""

from __future__ import annotations

from tstorage_server.testing import ServerProcess


def ephemeral_range() -> range:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
        low, high = map(int, file.read().split())
    return range(low, high + 1)


def test_each_server_process_gets_its_own_port_outside_the_ephemeral_range() -> None:
    ports = []
    for _ in range(3):
        with ServerProcess() as server:
            ports.append(server.port)
    assert len(set(ports)) == 3
    assert not set(ports) & set(ephemeral_range())


def test_a_restarted_server_keeps_its_port() -> None:
    with ServerProcess() as server:
        port = server.port
        server.kill()
        server.start()
        assert server.port == port
