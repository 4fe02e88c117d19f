"""The proxy is not an open relay: by default only loopback clients may use it, and it
never carries a request to this daemon's own ports, to the scheduler or to a link-local
address (cloud metadata), nor a CONNECT to a port other than 443; the operator can widen
each of these explicitly. The hostile requests stay in the suite."""

import socket
import subprocess

import pytest

from harness import binary, free_port, scaled, start_daemon, start_scheduler
from proxy_support import read_reply


def via_proxy(proxy_port, raw, timeout=10):
    """Sends raw to the proxy and reads its answer until it closes the connection (every
    request here ends in a closing answer)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=scaled(timeout)) as s:
        s.sendall(raw)
        return read_reply(s, scaled(timeout))


def get(proxy_port, url):
    host = url.split("/")[2]
    return via_proxy(proxy_port, f"GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close"
                                 "\r\n\r\n".encode())


def connect(proxy_port, target):
    return via_proxy(proxy_port, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())


@pytest.mark.deadline(90)
def test_default_policy_refuses_own_ports_scheduler_and_metadata(tmp_path, origin, need_binary):
    origin.add_bytes("/ok.txt", b"fine\n")
    sched = start_scheduler(tmp_path)
    d = start_daemon(tmp_path, "d1", scheduler=sched)
    p = d.proxy_port
    refused = {
        "piece port": get(p, f"http://127.0.0.1:{d.piece_port}/metrics"),
        "piece port by name": get(p, f"http://localhost:{d.piece_port}/metrics"),
        "proxy itself": get(p, f"http://127.0.0.1:{p}/"),
        "rpc port": get(p, f"http://127.0.0.1:{d.rpc_port}/"),
        "scheduler": get(p, f"http://127.0.0.1:{sched.port}/"),
        "metadata": get(p, "http://169.254.169.254/latest/meta-data/"),
        "metadata, mapped": get(p, "http://[::ffff:169.254.169.254]/latest/meta-data/"),
        "CONNECT metadata": connect(p, "169.254.169.254:443"),
        "CONNECT port 22": connect(p, "127.0.0.1:22"),
        "CONNECT piece port": connect(p, f"127.0.0.1:{d.piece_port}"),
    }
    for what, reply in refused.items():
        assert reply.startswith(b"HTTP/1.1 403"), (what, reply[:300])
        assert b"damselfly_" not in reply, (what, "metrics leaked through the proxy")
    assert b"link-local" in refused["metadata"]
    assert b"own port" in refused["piece port by name"]
    assert b"the scheduler" in refused["scheduler"]
    # An ordinary origin (another port on loopback) still works.
    ok = get(p, origin.url("/ok.txt"))
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"fine\n"), ok[:300]
    assert d.metric("damselfly_proxy_refused_total", what="target") == len(refused)


@pytest.mark.deadline(60)
def test_operator_can_allow_targets_and_ports(tmp_path, need_binary):
    d = start_daemon(tmp_path, "d1", proxy_allow_targets=["127.0.0.1/32"])
    reply = get(d.proxy_port, f"http://127.0.0.1:{d.piece_port}/metrics")
    assert reply.startswith(b"HTTP/1.1 200") and b"damselfly_" in reply, reply[:300]
    # The allow-list names addresses: the metadata service stays refused.
    assert get(d.proxy_port, "http://169.254.169.254/").startswith(b"HTTP/1.1 403")


@pytest.mark.deadline(60)
def test_clients_outside_the_allow_list_are_refused(tmp_path, need_binary):
    # The list replaces the loopback default: a loopback client is now outside it.
    d = start_daemon(tmp_path, "d1", proxy_allow_clients=["10.0.0.0/8"])
    reply = via_proxy(d.proxy_port, b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
    assert d.metric("damselfly_proxy_refused_total", what="client") == 1
    assert b"refused a client at 127.0.0.1" in d.log_bytes()


@pytest.mark.deadline(60)
def test_a_wide_listen_address_needs_an_allow_list(tmp_path, need_binary):
    port = free_port()
    args = [str(binary()), "daemon", "--data-dir", str(tmp_path / "data"), "--socket",
            str(tmp_path / "s.sock"), "--piece-listen", f"127.0.0.1:{free_port()}",
            "--proxy-listen", f"0.0.0.0:{port}"]
    cp = subprocess.run(args, capture_output=True, text=True, timeout=scaled(20),
                        stdin=subprocess.DEVNULL)
    assert cp.returncode != 0
    assert "needs --proxy-allow-clients" in cp.stderr, cp.stderr
    # With the list, it starts (and a loopback client in it is served).
    d = start_daemon(tmp_path, "d2", proxy_listen=f"0.0.0.0:{free_port()}",
                     proxy_allow_clients=["127.0.0.0/8"])
    reply = via_proxy(d.proxy_port, b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 502"), reply[:200]
