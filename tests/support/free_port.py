"""A free TCP port for a test server, below the kernel's ephemeral range.

A port from bind(("127.0.0.1", 0)) is an ephemeral one: between the probe and the server's own
bind, any process that opens a connection or a listener on port 0 may be given it (Open MPI's TCP
transports did: `kvshard serve` under mpirun then failed with "Address already in use"). Ports
below /proc/sys/net/ipv4/ip_local_port_range's lower bound are never handed out that way, so a
free one stays free unless another test picks the same number: each pick is random.

Usage: `python3 tests/support/free_port.py` prints one; tests import free_port().
"""
import random
import socket


def _ephemeral_floor():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port():
    hi = min(_ephemeral_floor(), 65536)
    lo = max(1024, hi - 12000)
    for _ in range(200):
        port = random.randrange(lo, hi)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError(f"no free port in [{lo}, {hi})")


if __name__ == "__main__":
    print(free_port())
