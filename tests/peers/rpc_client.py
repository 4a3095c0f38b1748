"""A zmtp-rpc client written from docs/PROTOCOL.md alone: pyzmq REQ + msgpack.

Usage: rpc_client.py ENDPOINT. Calls the calculator service and checks every answer;
exits non-zero (with a message) on the first surprise.
"""
import sys
import uuid

import msgpack
import zmq

OK, APP_ERROR, UNKNOWN_METHOD, BAD_REQUEST = 0, 1, 2, 3


def call(sock, method, args, timeout_ms=5000):
    rid = uuid.uuid4().bytes
    header = {"v": 1, "id": rid, "method": method, "timeout_ms": timeout_ms,
              "attempt": 1, "meta": {"client": "python"}}
    sock.send_multipart([msgpack.packb(header), msgpack.packb(args)])
    if not sock.poll(timeout_ms):
        raise SystemExit(f"{method}: no reply within {timeout_ms} ms")
    frames = sock.recv_multipart()
    assert len(frames) == 2, f"{method}: {len(frames)} frames"
    rh = msgpack.unpackb(frames[0])
    assert rh["v"] == 1 and rh["id"] == rid, f"{method}: header {rh}"
    body = msgpack.unpackb(frames[1]) if rh["status"] in (OK, APP_ERROR) else None
    return rh["status"], rh["message"], body


def main():
    sock = zmq.Context().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(sys.argv[1])

    status, _, body = call(sock, "calc.add", {"a": 2, "b": 3})
    assert (status, body) == (OK, 5), (status, body)
    print("add ok", body)

    status, _, body = call(sock, "calc.div", {"a": 1, "b": 0})
    assert (status, body) == (APP_ERROR, "DivideByZero"), (status, body)
    print("div app error", body)

    status, _, body = call(sock, "calc.mul", {"a": 2**62, "b": 4})
    assert (status, body) == (APP_ERROR, {"Overflow": {"op": "mul"}}), (status, body)
    print("mul app error", body)

    status, msg, _ = call(sock, "calc.sqrt", {"a": 4})
    assert status == UNKNOWN_METHOD, (status, msg)
    print("unknown method", msg)

    status, msg, _ = call(sock, "calc.add", {"a": "two", "b": 3})
    assert status == BAD_REQUEST, (status, msg)
    print("bad request", msg)

    print("ALL OK")


if __name__ == "__main__":
    main()
