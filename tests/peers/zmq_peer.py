"""A pyzmq (libzmq) socket remote-controlled over stdin/stdout, for interop tests.

One command per line, one answer per line:
  socket TYPE [name=value ...]  -> ok          (options: identity=HEX heartbeat_ivl=MS
                                               heartbeat_timeout=MS heartbeat_ttl=MS
                                               req_correlate=1 req_relaxed=1
                                               router_mandatory=1 maxmsgsize=N
                                               curve_server=SECRET_Z85
                                               curve_client=SECRET_Z85,SERVER_PUBLIC_Z85
                                               plain_server=USER,PASSWORD (ZAP)
                                               plain_client=USER,PASSWORD)
  curve_keypair                 -> ok PUBLIC SECRET   (Z85, from libzmq)
  curve_public SECRET           -> ok PUBLIC          (libzmq's derivation)
  bind ENDPOINT                 -> ok LAST_ENDPOINT
  connect ENDPOINT              -> ok
  send HEX|- [HEX|- ...]        -> ok          ("-" is an empty frame)
  recv TIMEOUT_MS               -> msg HEX|- ... | timeout
  serve NAME                    -> ok          (REP/ROUTER: answer every request in a
                                               background thread with NAME + ":" + body)
  served                        -> ok N        (requests answered by serve so far)
  quit                          -> (exits)
Errors answer "err MESSAGE". The process exits when stdin closes.
"""
import sys
import threading

import zmq

ctx = zmq.Context.instance()
sock = None
served = 0
TYPES = {"REQ": zmq.REQ, "REP": zmq.REP, "DEALER": zmq.DEALER, "ROUTER": zmq.ROUTER}


def enc(frames):
    return " ".join(f.hex() if f else "-" for f in frames)


def dec(tokens):
    return [b"" if t == "-" else bytes.fromhex(t) for t in tokens]


def serve(name):
    global served
    prefix = name.encode() + b":"
    kind = sock.getsockopt(zmq.TYPE)
    while True:
        try:
            frames = sock.recv_multipart()
        except zmq.ZMQError:
            return
        if kind == zmq.ROUTER:
            i = frames.index(b"")
            reply = frames[: i + 1] + [prefix + b"".join(frames[i + 1 :])]
        else:
            reply = [prefix + b"".join(frames)]
        sock.send_multipart(reply)
        served += 1


def main():
    global sock
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        cmd, args = parts[0], parts[1:]
        try:
            if cmd == "socket":
                sock = ctx.socket(TYPES[args[0]])
                sock.setsockopt(zmq.LINGER, 0)
                for kv in args[1:]:
                    k, v = kv.split("=", 1)
                    if k == "identity":
                        sock.setsockopt(zmq.ROUTING_ID, bytes.fromhex(v))
                    elif k == "heartbeat_ivl":
                        sock.setsockopt(zmq.HEARTBEAT_IVL, int(v))
                    elif k == "heartbeat_timeout":
                        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(v))
                    elif k == "heartbeat_ttl":
                        sock.setsockopt(zmq.HEARTBEAT_TTL, int(v))
                    elif k == "req_correlate":
                        sock.setsockopt(zmq.REQ_CORRELATE, int(v))
                    elif k == "req_relaxed":
                        sock.setsockopt(zmq.REQ_RELAXED, int(v))
                    elif k == "router_mandatory":
                        sock.setsockopt(zmq.ROUTER_MANDATORY, int(v))
                    elif k == "maxmsgsize":
                        sock.setsockopt(zmq.MAXMSGSIZE, int(v))
                    elif k == "plain_server":
                        # libzmq's PLAIN server needs a ZAP handler: pyzmq's
                        # authenticator, allowing this one user.
                        from zmq.auth.thread import ThreadAuthenticator
                        user, password = v.split(",", 1)
                        auth = ThreadAuthenticator(ctx)
                        auth.start()
                        auth.configure_plain(domain="*", passwords={user: password})
                        sock.plain_server = True
                    elif k == "plain_client":
                        user, password = v.split(",", 1)
                        sock.plain_username = user.encode()
                        sock.plain_password = password.encode()
                    elif k == "curve_server":
                        sock.curve_server = True
                        sock.curve_secretkey = v.encode()
                        sock.curve_publickey = zmq.curve_public(v.encode())
                    elif k == "curve_client":
                        secret, server = v.split(",", 1)
                        sock.curve_secretkey = secret.encode()
                        sock.curve_publickey = zmq.curve_public(secret.encode())
                        sock.curve_serverkey = server.encode()
                    else:
                        raise ValueError("unknown option " + k)
                print("ok")
            elif cmd == "curve_keypair":
                public, secret = zmq.curve_keypair()
                print("ok", public.decode(), secret.decode())
            elif cmd == "curve_public":
                print("ok", zmq.curve_public(args[0].encode()).decode())
            elif cmd == "bind":
                sock.bind(args[0])
                print("ok", sock.getsockopt(zmq.LAST_ENDPOINT).decode())
            elif cmd == "connect":
                sock.connect(args[0])
                print("ok")
            elif cmd == "send":
                sock.send_multipart(dec(args))
                print("ok")
            elif cmd == "recv":
                if sock.poll(int(args[0]), zmq.POLLIN):
                    print("msg", enc(sock.recv_multipart()))
                else:
                    print("timeout")
            elif cmd == "serve":
                threading.Thread(target=serve, args=(args[0],), daemon=True).start()
                print("ok")
            elif cmd == "served":
                print("ok", served)
            elif cmd == "quit":
                break
            else:
                print("err unknown command", cmd)
        except Exception as e:  # reported to the test, which fails on it
            print("err", repr(e).replace("\n", " "))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
