"""A zmtp-rpc server written from docs/PROTOCOL.md alone: pyzmq ROUTER + msgpack.

Serves the calculator service (`calc.add`, `calc.div`, `calc.mul`) on
tcp://127.0.0.1:<any port>, prints "READY <endpoint>", and serves until stdin closes.
"""
import sys
import threading

import msgpack
import zmq

OK, APP_ERROR, UNKNOWN_METHOD, BAD_REQUEST = 0, 1, 2, 3
I64 = (-(2**63), 2**63 - 1)


def handle(method, args):
    a, b = args.get("a"), args.get("b")
    if not isinstance(a, int) or not isinstance(b, int):
        return BAD_REQUEST, "a and b must be integers", None
    if method == "calc.add":
        return OK, "", a + b
    if method == "calc.div":
        if b == 0:
            return APP_ERROR, "", "DivideByZero"
        q = abs(a) // abs(b)  # i64 division truncates toward zero
        return OK, "", q if (a >= 0) == (b >= 0) else -q
    if method == "calc.mul":
        r = a * b
        if not I64[0] <= r <= I64[1]:
            return APP_ERROR, "", {"Overflow": {"op": "mul"}}
        return OK, "", r
    return UNKNOWN_METHOD, f"unknown method {method}", None


def serve(sock):
    while True:
        frames = sock.recv_multipart()
        i = frames.index(b"", 1)  # end of the envelope
        envelope, body = frames[: i + 1], frames[i + 1:]
        try:
            header = msgpack.unpackb(body[0])
            args = msgpack.unpackb(body[1])
            status, message, value = handle(header["method"], args)
            rid = header["id"]
        except Exception as e:  # unreadable request
            status, message, value, rid = BAD_REQUEST, str(e), None, bytes(16)
        reply = {"v": 1, "id": rid, "status": status, "message": message}
        payload = msgpack.packb(value) if status in (OK, APP_ERROR) else b""
        sock.send_multipart(envelope + [msgpack.packb(reply), payload])


def main():
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    print("READY", sock.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
