"""Checks a zmtp-rpc server against docs/PROTOCOL.md's rules on malformed requests,
from a plain pyzmq REQ socket and msgpack.

Usage: conformance.py ENDPOINT. Prints one line per rule and "ALL OK"; exits non-zero
on the first surprise. The server serves the calculator (calc.add).
"""
import sys
import uuid

import msgpack
import zmq

BAD_REQUEST = 3
TOO_LARGE = 8


def exchange(sock, frames):
    sock.send_multipart(frames)
    if not sock.poll(5000):
        raise SystemExit("no reply within 5 s")
    reply = sock.recv_multipart()
    assert len(reply) == 2, f"{len(reply)} frames in the reply"
    header = msgpack.unpackb(reply[0])
    assert isinstance(header, dict), f"the reply header is not a map: {header!r}"
    return header


def header(**fields):
    h = {"v": 1, "id": uuid.uuid4().bytes, "method": "calc.add", "timeout_ms": 5000,
         "attempt": 1}
    h.update(fields)
    return h


def main():
    sock = zmq.Context().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(sys.argv[1])

    # §3: the header is a map; a positional array is refused.
    h = header()
    positional = [h["v"], h["id"], h["method"], h["timeout_ms"], h["attempt"], {}]
    r = exchange(sock, [msgpack.packb(positional), msgpack.packb({"a": 1, "b": 2})])
    assert r["status"] == BAD_REQUEST, f"array header: {r}"
    print("array header refused:", r["message"])

    # §4: the arguments are a map of named arguments; an array is refused.
    h = header()
    r = exchange(sock, [msgpack.packb(h), msgpack.packb([1, 2])])
    assert r["status"] == BAD_REQUEST, f"array arguments: {r}"
    assert r["id"] == h["id"], f"array arguments answered for another id: {r}"
    print("array arguments refused:", r["message"])

    # A header bad elsewhere but with a readable id is answered with that id.
    h = header(timeout_ms="soon")
    r = exchange(sock, [msgpack.packb(h), msgpack.packb({"a": 1, "b": 2})])
    assert r["status"] == BAD_REQUEST, f"bad timeout_ms: {r}"
    assert r["id"] == h["id"], f"answered with id {r['id']!r}, not the request's"
    print("bad header answered with its id:", r["message"])

    # An id reused with another method is refused, not answered from the cache entry
    # of the first.
    h = header()
    r = exchange(sock, [msgpack.packb(h), msgpack.packb({"a": 1, "b": 2})])
    assert r["status"] == 0, f"first use of the id: {r}"
    h2 = header(id=h["id"], method="calc.div")
    r = exchange(sock, [msgpack.packb(h2), msgpack.packb({"a": 8, "b": 2})])
    assert r["status"] == BAD_REQUEST, f"id reused with another method: {r}"
    assert r["id"] == h["id"], f"answered for another id: {r}"
    print("id reused with another method refused:", r["message"])

    # §3: a request over the server's limit (4 MiB) is answered TOO_LARGE with its id,
    # and the connection stays: the next requests below go on the same one.
    h = header()
    big = msgpack.packb({"a": 1, "b": "x" * (5 << 20)})
    r = exchange(sock, [msgpack.packb(h), big])
    assert r["status"] == TOO_LARGE, f"oversize request: {r}"
    assert r["id"] == h["id"], f"oversize request answered for another id: {r}"
    print("oversize request refused:", r["message"])

    # Even when the header itself passes the limit: then with the all-zero id.
    r = exchange(sock, [b"\x00" * (5 << 20), msgpack.packb({"a": 1, "b": 2})])
    assert r["status"] == TOO_LARGE, f"oversize header: {r}"
    assert r["id"] == bytes(16), f"oversize header answered with id {r['id']!r}"
    print("oversize header refused:", r["message"])

    # And a good request still works on the same socket.
    h = header()
    sock.send_multipart([msgpack.packb(h), msgpack.packb({"a": 40, "b": 2})])
    assert sock.poll(5000)
    frames = sock.recv_multipart()
    assert msgpack.unpackb(frames[0])["status"] == 0 and msgpack.unpackb(frames[1]) == 42
    print("ALL OK")


if __name__ == "__main__":
    main()
