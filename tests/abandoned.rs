//! Requests whose client gave up: a request that sat in a frozen server's socket while
//! its client timed out and closed the connection (its FIN queued behind the request)
//! is not started when the server wakes. The client is written by hand, over a Unix
//! socket (whose writes and close reach the server's receive queue before they
//! return) and over TCP (the test waits until the server's socket is in CLOSE_WAIT:
//! the FIN, and so everything before it, has arrived): what the server finds when it
//! wakes is exactly what the test wrote.
//!
//! And a request that waited past its caller's deadline while its client stayed
//! connected: a server that states a bound on clock skew refuses it by the send time
//! the request carries.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use support::{EchoServer, MyEcho};
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
    /// A server on `ipc://` (in a directory of its own) or on TCP port 0, stating
    /// `clock_skew` if given.
    fn start(ipc: bool, clock_skew: Option<Duration>) -> Frozen {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("zmtp-rpc-abandoned-{pid}-{n}"));
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
        let mut builder = Server::builder()
            .bind(ep.as_str())
            .add_service(EchoServer::new(MyEcho));
        if let Some(bound) = clock_skew {
            builder = builder.clock_skew(bound);
        }
        let server = rt.block_on(builder.start()).unwrap();
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
        self.send_echo_sent(i, text, 60_000, None);
    }

    /// Sends `echo.echo(text)` as request `i` with `timeout_ms` left, saying it was
    /// sent at `sent_ms` (Unix milliseconds) if given.
    fn send_echo_sent(&mut self, i: u8, text: &str, timeout_ms: u64, sent_ms: Option<u64>) {
        #[derive(serde::Serialize)]
        struct Args<'a> {
            text: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Header {
            v: u8,
            #[serde(with = "support::serde_bytes16")]
            id: [u8; 16],
            method: &'static str,
            timeout_ms: u64,
            attempt: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            sent_ms: Option<u64>,
        }
        let header = Header {
            v: 1,
            id: [i; 16],
            method: "echo.echo",
            timeout_ms,
            attempt: 1,
            sent_ms,
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
    let server = Frozen::start(ipc, None);
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

/// The reply's status.
fn status(reply: &[Bytes]) -> zmtp_rpc::Status {
    assert_eq!(reply.len(), 3, "[empty][header][body]: {reply:?}");
    rpc_core::envelope::ReplyHeader::from_bytes(&reply[1])
        .unwrap()
        .status
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    since.as_millis() as u64
}

#[test]
fn a_request_read_past_its_callers_deadline_is_refused_where_clock_skew_is_bounded() {
    use zmtp_rpc::Status;
    let server = Frozen::start(true, Some(Duration::from_millis(500)));
    let mut client = server.connect();
    // Sent 10 s ago with 1 s to live: refused, not run.
    client.send_echo_sent(1, "stale", 1_000, Some(now_ms() - 10_000));
    assert_eq!(status(&client.recv()), Status::DeadlineExceeded);
    // Sent now: served. Not saying when: served (not judged).
    client.send_echo_sent(2, "fresh", 1_000, Some(now_ms()));
    assert_eq!(status(&client.recv()), Status::Ok);
    client.send_echo_sent(3, "unsaid", 1_000, None);
    assert_eq!(status(&client.recv()), Status::Ok);
    let stats = server.server.stats();
    assert_eq!((stats.executed, stats.rejected), (2, 1), "{stats:?}");

    // A server that states no bound runs the old request.
    let lenient = Frozen::start(false, None);
    let mut client = lenient.connect();
    client.send_echo_sent(4, "stale", 1_000, Some(now_ms() - 10_000));
    assert_eq!(status(&client.recv()), Status::Ok);
}

/// Our client says when it sent a request only when asked to (`send_time`), and then
/// with the wall clock of the attempt.
#[tokio::test]
async fn the_client_says_when_it_sent_a_request_when_asked_to() {
    for on in [false, true] {
        let mut router = zmtp_rpc::transport::RouterSocket::new();
        let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        let client = zmtp_rpc::Client::builder()
            .endpoint(&ep)
            .send_time(on)
            .call_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap();
        let call = tokio::spawn(async move {
            let echo = support::EchoClient::new(client);
            echo.echo("when".into()).await
        });
        let before = now_ms();
        let msg = tokio::time::timeout(Duration::from_secs(10), router.recv())
            .await
            .expect("the request arrives")
            .unwrap();
        // [routing id][empty][header][args]: a typed call's envelope is the delimiter.
        assert_eq!(msg.len(), 4, "{msg:?}");
        assert!(msg.frames()[1].is_empty());
        let header = rpc_core::envelope::RequestHeader::from_bytes(&msg.frames()[2]).unwrap();
        match header.sent_ms {
            Some(ms) => {
                assert!(on, "sent_ms without send_time");
                assert!(ms + 5_000 >= before && ms <= now_ms(), "{ms} vs {before}");
            }
            None => assert!(!on, "no sent_ms with send_time"),
        }
        // Unanswered: the call ends by its deadline.
        assert!(call.await.unwrap().is_err());
    }
}
