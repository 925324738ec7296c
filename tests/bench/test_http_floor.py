from __future__ import annotations

import http.client

from bench.api import load
from bench.http_floor import FixedAnswer
from simstream.stack.process import free_port
from workers.api.server import ThreadedServer

ANSWER = b'{"model_version":"v1","neighbors":[{"id":"a","distance":0.5}]}'


def test_every_request_gets_the_fixed_answer_after_its_whole_body_is_read() -> None:
    port = free_port()
    with ThreadedServer(FixedAnswer(ANSWER), "127.0.0.1", port):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers = []
        for body in (b'{"vector":[1,2]}', b"x" * 200_000):  # the second spans many reads
            connection.request("POST", "/v1/lookup", body=body)
            response = connection.getresponse()
            answers.append((response.status, response.getheader("content-type"), response.read()))
        connection.request("POST", "/v1/lookup", body=iter([b"chunk-1", b"chunk-2"]))  # chunked
        chunked = connection.getresponse()
        answers.append((chunked.status, chunked.getheader("content-type"), chunked.read()))
        connection.close()

    assert answers == [(200, "application/json", ANSWER)] * 3


def test_the_benchmark_client_counts_every_floor_answer_as_a_success() -> None:
    port = free_port()
    with ThreadedServer(FixedAnswer(ANSWER), "127.0.0.1", port):
        result = load(f"http://127.0.0.1:{port}/v1/lookup", [b"{}", b"[]"], 2, 0.3)

    assert result["failures"] == 0
    assert len(result["latencies"]) > 10
