"""The review session and its HTTP server without a browser: resume, validation, token, Host check."""

from __future__ import annotations

import http.client
import itertools
import threading

import orjson
import pytest

from synpref.cli import cli
from synpref.io import read_json_records
from synpref.labels import load_labels
from synpref.review import ReviewSession, make_server
from synpref.review.session import ReviewError, reply_order


@pytest.fixture
def pairs(examples) -> list[dict]:
    return list(itertools.islice(read_json_records(str(examples / "hhh-alignment.jsonl.zst")), 6))


@pytest.fixture
def serve(tmp_path, pairs):
    """Start a server on a free port in a thread; returns (server, request function)."""
    servers = []

    def start(host: str = "127.0.0.1", records=None):
        session = ReviewSession(records or pairs, str(tmp_path / "labels.jsonl.zst"), "ann")
        server = make_server(session, host, 0)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        port = server.server_address[1]

        def request(method, path, body=None, headers=None):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            sent = {"Host": f"127.0.0.1:{port}", **(headers or {})}
            if isinstance(body, dict | list):
                body = orjson.dumps(body)
                sent.setdefault("Content-Type", "application/json")
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            connection.close()
            return response.status, dict(response.getheaders()), data

        return server, request

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
        server.session.close()


def test_session_resumes_and_undo_reaches_earlier_sessions(tmp_path, pairs):
    path = str(tmp_path / "labels.jsonl")
    session = ReviewSession(pairs, path, "ann")
    assert session.current() == 0
    session.decide(pairs[0]["id"], "1", note="  a note ")
    session.decide(pairs[1]["id"], "unsure")
    session.close()

    session = ReviewSession(pairs, path, "ann")
    assert session.current() == 2 and len(session.decisions) == 2
    assert session.undo() == pairs[1]["id"]
    assert session.current() == 1
    session.decide(pairs[1]["id"], "2", seconds=3.25)
    session.close()
    labels = load_labels([path])
    first, second = labels[pairs[0]["id"]][0], labels[pairs[1]["id"]][0]
    assert first["prefers"] == reply_order("human:ann", pairs[0]["id"])[0] and first["meta"]["note"] == "a note"
    assert second["prefers"] == reply_order("human:ann", pairs[1]["id"])[1] and second["meta"]["seconds"] == 3.2

    other = ReviewSession(pairs, path, "bob")  # another annotator in the same file starts fresh
    assert other.current() == 0
    other.close()


def test_reply_order_is_stable_and_balanced(examples):
    ids = [r["id"] for r in itertools.islice(read_json_records(str(examples / "pandalm-test.jsonl.zst")), 400)]
    orders = [reply_order("human:ann", pair_id) for pair_id in ids]
    assert orders == [reply_order("human:ann", pair_id) for pair_id in ids]
    assert 150 < sum(order[0] == "chosen" for order in orders) < 250
    assert orders != [reply_order("human:bob", pair_id) for pair_id in ids]


def test_session_rejects_bad_input(tmp_path, pairs):
    path = str(tmp_path / "labels.jsonl.zst")
    with pytest.raises(ValueError, match="annotator"):
        ReviewSession(pairs, path, "ann/../x")
    with pytest.raises(ValueError, match="appears twice"):
        ReviewSession(pairs + pairs[:1], path, "ann")
    session = ReviewSession([{"id": "q", "conversation": []}, *pairs], path, "ann")
    assert session.not_pairs == 1 and len(session.pairs) == len(pairs)
    with pytest.raises(ReviewError) as error:
        session.decide("nope", "1")
    assert error.value.status == 404
    with pytest.raises(ReviewError):
        session.decide(pairs[0]["id"], "left")
    session.decide(pairs[0]["id"], "tie")
    with pytest.raises(ReviewError) as error:
        session.decide(pairs[0]["id"], "1")
    assert error.value.status == 409
    session.close()


def test_api_round_trip_and_page_headers(serve, pairs, tmp_path):
    server, request = serve()
    status, headers, body = request("GET", "/")
    assert status == 200 and b"<title>synpref review</title>" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, _, body = request("GET", "/api/state")
    state = orjson.loads(body)
    assert state["pair"]["id"] == pairs[0]["id"] and state["progress"]["total"] == len(pairs)
    assert "chosen" not in state["pair"] and "order" not in state["pair"]  # the page is blind to the label
    status, _, body = request("POST", "/api/decide", {"id": pairs[0]["id"], "choice": "1", "note": "ok"})
    assert status == 200 and orjson.loads(body)["pair"]["id"] == pairs[1]["id"]
    status, _, body = request("POST", "/api/undo", {})
    assert status == 200 and orjson.loads(body)["undone"] == pairs[0]["id"]
    assert [name for name in tmp_path.iterdir()] == [tmp_path / "labels.jsonl.zst"]  # nothing else written


@pytest.mark.parametrize(("path", "body", "headers", "status"), [
    ("/api/decide", b'{"id": "x", "choice": "1"}', {"Content-Type": "text/plain"}, 415),
    ("/api/decide", b"[1, 2]", {"Content-Type": "application/json"}, 400),
    ("/api/decide", b"{not json", {"Content-Type": "application/json"}, 400),
    ("/api/decide", b'{"id": "x", "choice": "1", "x" : 1}', {"Content-Type": "application/json"}, 400),
    ("/api/decide", b'{"id": 5, "choice": "1"}', {"Content-Type": "application/json"}, 400),
    ("/api/decide", b'{"id": "x", "choice": "1", "seconds": -1}', {"Content-Type": "application/json"}, 400),
    ("/api/decide", b'{"id": "x", "choice": "1"}', {"Content-Type": "application/json"}, 404),
    ("/api/decide", b'{"choice": "1"}', {"Content-Type": "application/json"}, 400),
    ("/api/decide", b'{"id": "x", "choice": "1", "note": "' + b"n" * 20000 + b'"}',
     {"Content-Type": "application/json"}, 413),
    ("/api/undo", b'{"id": "x"}', {"Content-Type": "application/json"}, 400),
    ("/api/undo", b"{}", {"Content-Type": "application/json"}, 409),
    ("/api/other", b"{}", {"Content-Type": "application/json"}, 404),
])
def test_bad_requests_are_refused_and_write_nothing(serve, tmp_path, path, body, headers, status):
    _, request = serve()
    got, _, answer = request("POST", path, body, headers)
    assert got == status and "error" in orjson.loads(answer)
    assert (tmp_path / "labels.jsonl.zst").stat().st_size == 0


@pytest.mark.parametrize("path", ["/static/../labels.jsonl.zst", "/static/review.py", "/etc/passwd", "/api/"])
def test_only_the_fixed_static_files_are_served(serve, path):
    _, request = serve()
    assert request("GET", path)[0] == 404


def test_loopback_refuses_foreign_host_headers(serve):
    _, request = serve()
    assert request("GET", "/api/state", headers={"Host": "attacker.example:80"})[0] == 403
    assert request("GET", "/", headers={"Host": "attacker.example:80"})[0] == 403


def test_any_other_address_requires_the_token(serve, pairs):
    server, request = serve("0.0.0.0")
    assert server.token and len(server.token) >= 24
    assert request("GET", "/")[0] == 200  # the page itself holds no data
    assert request("GET", "/api/state")[0] == 401
    assert request("GET", "/api/state", headers={"X-Review-Token": "wrong"})[0] == 401
    assert request("POST", "/api/decide", {"id": pairs[0]["id"], "choice": "1"})[0] == 401
    assert request("GET", "/api/state", headers={"X-Review-Token": server.token})[0] == 200


def test_cli_refuses_bad_arguments(runner, tmp_path, examples):
    stream = str(examples / "hhh-alignment.jsonl.zst")
    result = runner.invoke(cli, ["review", stream, "-o", str(tmp_path / "l.zst"), "--annotator", "a b"])
    assert result.exit_code == 2 and "--annotator" in result.output
    result = runner.invoke(cli, ["review", str(tmp_path / "missing.zst"), "-o", str(tmp_path / "l.zst"),
                                 "--annotator", "ann"])
    assert result.exit_code == 1 and "no such file" in result.output
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "by": "human:ann", "prefers": "left"}\n')
    result = runner.invoke(cli, ["review", stream, "-o", str(tmp_path / "bad.jsonl"), "--annotator", "ann"])
    assert result.exit_code == 1 and "bad.jsonl:1" in result.output and "prefers" in result.output


# ---- hardening (issue 12): slow or vanishing clients, duplicate Host headers --------------------
@pytest.fixture
def raw_server(tmp_path, pairs):
    """A server with a short request timeout, on a thread; yields a function that starts it over
    RECORDS (default: the pairs) and returns (server, port, finished): `finished` is set each time
    a request's connection has been shut down, after any error it raised was handled."""
    started = []

    def start(records=None, request_timeout=0.5):
        session = ReviewSession(records or pairs, str(tmp_path / "labels.jsonl.zst"), "ann")
        server = make_server(session, "127.0.0.1", 0, request_timeout=request_timeout)
        finished = threading.Event()
        shutdown_request = server.shutdown_request

        def observed(request):
            shutdown_request(request)
            finished.set()

        server.shutdown_request = observed
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        started.append(server)
        return server, server.server_address[1], finished

    yield start
    for server in started:
        server.shutdown()
        server.server_close()
        server.session.close()


def _reset(connection) -> None:
    """Close with a TCP reset, as a killed browser tab or a dropped tunnel does."""
    import socket
    import struct

    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def test_a_body_shorter_than_its_length_times_out_and_frees_the_thread(raw_server, tmp_path):
    import socket
    import time

    server, port, _ = raw_server(request_timeout=0.5)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100\r\n\r\n{\"id\": " % port)
    started = time.monotonic()
    reply = client.recv(65536)
    assert reply.startswith(b"HTTP/1.0 408") and b"did not arrive" in reply
    assert time.monotonic() - started < 5
    client.close()
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    other.request("GET", "/api/state", headers={"Host": f"127.0.0.1:{port}"})
    assert other.getresponse().status == 200
    assert (tmp_path / "labels.jsonl.zst").stat().st_size == 0


def test_a_client_leaving_mid_request_or_mid_response_prints_nothing(raw_server, capfd):
    import socket

    long_pair = {"id": "long", "conversation": [{"role": "user", "content": "q"}], "chosen": "x" * 16_000_000,
                 "rejected": "y"}
    server, port, finished = raw_server([long_pair], request_timeout=5)
    # mid-response: the 16 MB state cannot fit the socket buffers of a client that stops reading
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    assert client.recv(1024).startswith(b"HTTP/1.0 200")
    _reset(client)
    assert finished.wait(10)
    # mid-request: the body never comes, the connection is reset
    finished.clear()
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 50\r\n\r\n{" % port)
    _reset(client)
    assert finished.wait(10)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err and "Exception" not in err


def test_two_host_headers_are_refused(raw_server):
    server, port, _ = raw_server()
    for hosts in ([f"127.0.0.1:{port}", "attacker.example"], [f"127.0.0.1:{port}", f"127.0.0.1:{port}"]):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("GET", "/api/state", skip_host=True)
        for host in hosts:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 400 and b"more than one Host" in response.read()
        connection.close()
    one = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    one.request("GET", "/api/state", headers={"Host": f"127.0.0.1:{port}"})
    assert one.getresponse().status == 200
