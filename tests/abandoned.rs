//! Requests whose client gave up: a request that sat in a frozen server's socket while
//! its client timed out and closed the connection (its FIN queued behind the request)
//! is not started when the server wakes. The client is written by hand, over a Unix
//! socket (whose writes and close reach the server's receive queue before they
//! return) and over TCP (the test waits until the server's socket is in CLOSE_WAIT:
//! the FIN, and so everything before it, has arrived): what the server finds when it
//! wakes is exactly what the test wrote.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use support::{EchoServer, Hdr, MyEcho};
use zmtp_rpc::transport::zmtp::{Connection, ConnectionConfig, Event, SocketType};
use zmtp_rpc::{Server, ServerHandle};

/// A server on a one-thread runtime of its own, which the test can freeze.
struct Frozen {
    server: ServerHandle,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: std::path::PathBuf,
}

impl Frozen {
    /// A server on `ipc://` (in a directory of its own) or on TCP port 0.
    fn start(ipc: bool) -> Frozen {
        let dir =
            std::env::temp_dir().join(format!("zmtp-rpc-abandoned-{}-{ipc}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ep = if ipc {
            format!("ipc://{}/server.sock", dir.display())
        } else {
            "tcp://127.0.0.1:0".to_string()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(
                Server::builder()
                    .bind(ep.as_str())
                    .add_service(EchoServer::new(MyEcho))
                    .start(),
            )
            .unwrap();
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = rt.block_on(stopped);
        });
        Frozen {
            server,
            handle,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    /// A new connection to the server.
    fn connect(&self) -> Dealer {
        let ep = self.server.endpoints()[0].to_string();
        let limit = Some(Duration::from_secs(10));
        let s: Box<dyn Stream> = match ep.strip_prefix("ipc://") {
            Some(path) => {
                let s = UnixStream::connect(path).unwrap();
                s.set_read_timeout(limit).unwrap();
                Box::new(s)
            }
            None => {
                let s = TcpStream::connect(ep.trim_start_matches("tcp://")).unwrap();
                s.set_read_timeout(limit).unwrap();
                Box::new(s)
            }
        };
        Dealer::over(s)
    }

    /// Waits (10 s at most) until what a closed client sent has all arrived: at once
    /// over a Unix socket; over TCP, once the server's socket is in CLOSE_WAIT (the
    /// FIN arrived, so everything before it did).
    fn wait_closed_by_client(&self) {
        let Some(port) = self.server.endpoints()[0].port() else {
            return;
        };
        let start = Instant::now();
        while !close_wait(port) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the server's socket never saw the client's FIN"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Blocks the server's only thread until the returned sender is dropped.
    fn freeze(&self) -> std::sync::mpsc::Sender<()> {
        let (frozen, is_frozen) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        self.handle.spawn(async move {
            frozen.send(()).unwrap();
            let _ = released.recv();
        });
        is_frozen.recv().unwrap();
        release
    }

    /// Waits (10 s at most) until the server has received `n` requests.
    fn wait_requests(&self, n: u64) {
        let start = Instant::now();
        while self.server.stats().requests < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the server received {} of {n} requests",
                self.server.stats().requests
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.thread.take().map(|t| t.join());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a socket of local port `port` (the server's side) is in CLOSE_WAIT,
/// from `/proc/net/tcp`.
fn close_wait(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local_port = cols[1].rsplit(':').next().unwrap();
        u16::from_str_radix(local_port, 16) == Ok(port) && cols[3] == "08"
    })
}

/// A blocking byte stream: TCP or Unix.
trait Stream: Read + Write {}
impl Stream for TcpStream {}
impl Stream for UnixStream {}

/// A DEALER written by hand: the sans-IO connection over a blocking socket.
struct Dealer {
    s: Box<dyn Stream>,
    c: Connection,
    buf: BytesMut,
}

impl Dealer {
    fn over(s: Box<dyn Stream>) -> Dealer {
        let c = Connection::new(
            ConnectionConfig::new(SocketType::Dealer),
            std::time::Instant::now(),
        );
        let mut d = Dealer {
            s,
            c,
            buf: BytesMut::new(),
        };
        while !d.c.is_active() {
            d.flush();
            d.read();
        }
        d
    }

    fn flush(&mut self) {
        let out = self.c.transmit().take_all();
        self.s.write_all(&out).unwrap();
    }

    fn read(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.s.read(&mut chunk).expect("the server answers in time");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
        self.c
            .handle_input(&mut self.buf, std::time::Instant::now())
            .unwrap();
    }

    /// Sends `echo.echo(text)` as request `i`.
    fn send_echo(&mut self, i: u8, text: &str) {
        #[derive(serde::Serialize)]
        struct Args<'a> {
            text: &'a str,
        }
        let header = Hdr {
            v: 1,
            id: [i; 16],
            method: "echo.echo",
            timeout_ms: 60_000,
            attempt: 1,
        };
        let frames = [Bytes::new(), enc(&header), enc(&Args { text })];
        self.c.send_frames(&frames, 0).unwrap();
        self.flush();
    }

    /// The next message's frames.
    fn recv(&mut self) -> Vec<Bytes> {
        loop {
            while let Some(ev) = self.c.poll_event() {
                if let Event::Message(m) = ev {
                    return m.frames().to_vec();
                }
            }
            self.read();
        }
    }
}

/// MessagePack with named fields, as the framework writes it.
fn enc(v: &impl serde::Serialize) -> Bytes {
    Bytes::from(zmtp_rpc::__private::codec::encode(v).unwrap())
}

/// Freezes the server, sends a request, closes, lets the server go on: the request is
/// not started, and a client that stays is served after.
fn given_up_while_frozen(ipc: bool) {
    let server = Frozen::start(ipc);
    let mut client = server.connect();
    // Served while the client waits: `[empty][header][reply]`.
    client.send_echo(1, "first");
    assert_eq!(client.recv().len(), 3, "an answer to the first request");
    assert_eq!(server.server.stats().executed, 1);

    // The server freezes; the client sends, gives up and closes.
    let release = server.freeze();
    client.send_echo(2, "given up");
    drop(client);
    server.wait_closed_by_client();
    drop(release);

    server.wait_requests(2);
    let stats = server.server.stats();
    assert_eq!(
        stats.executed, 1,
        "a request whose client had closed was started: {stats:?}"
    );
    assert_eq!(stats.abandoned, 1, "{stats:?}");

    // A client that stays is served as before.
    let mut client = server.connect();
    client.send_echo(3, "third");
    assert_eq!(client.recv().len(), 3);
    assert_eq!(server.server.stats().executed, 2);
}

#[test]
fn a_request_whose_client_closed_behind_it_is_not_started_ipc() {
    given_up_while_frozen(true);
}

#[test]
fn a_request_whose_client_closed_behind_it_is_not_started_tcp() {
    given_up_while_frozen(false);
}
