//! Endpoints (`tcp://`, `ipc://`, `inproc://`), listening and connecting.

use crate::sync::lock;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::SocketError;

/// Buffer size of each direction of an `inproc://` pipe.
const INPROC_PIPE_BYTES: usize = 256 * 1024;

/// A parsed endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `tcp://host:port`; host `*` binds every interface.
    Tcp {
        /// Host name or IP address (`*` for any, IPv6 in brackets).
        host: String,
        /// Port; 0 binds an ephemeral port.
        port: u16,
    },
    /// `ipc:///path`: a Unix domain socket.
    Ipc(PathBuf),
    /// `inproc://name`: in-process.
    Inproc(String),
}

impl Endpoint {
    /// The TCP port, for a `tcp://` endpoint.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Tcp { port, .. } => Some(*port),
            _ => None,
        }
    }

    fn tcp_addr(host: &str, port: u16) -> String {
        let host = if host == "*" { "0.0.0.0" } else { host };
        format!("{host}:{port}")
    }
}

impl FromStr for Endpoint {
    type Err = SocketError;

    fn from_str(s: &str) -> Result<Endpoint, SocketError> {
        let bad = |why| SocketError::InvalidEndpoint {
            endpoint: s.to_string(),
            reason: why,
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        match scheme {
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
                if host.is_empty() {
                    return Err(bad("missing host"));
                }
                let port = if port == "*" {
                    0
                } else {
                    port.parse().map_err(|_| bad("invalid port"))?
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Ok(Endpoint::Tcp {
                    host: host.to_string(),
                    port,
                })
            }
            "ipc" if !rest.is_empty() => Ok(Endpoint::Ipc(PathBuf::from(rest))),
            "inproc" if !rest.is_empty() => Ok(Endpoint::Inproc(rest.to_string())),
            "ipc" | "inproc" => Err(bad("empty address")),
            _ => Err(bad("unsupported transport")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Ipc(p) => write!(f, "ipc://{}", p.display()),
            Endpoint::Inproc(n) => write!(f, "inproc://{n}"),
        }
    }
}

/// Both halves of a connected byte stream, whatever the transport.
pub(crate) struct Io {
    pub read: Box<dyn AsyncRead + Send + Unpin>,
    pub write: Box<dyn AsyncWrite + Send + Unpin>,
    pub peer: String,
}

impl Io {
    fn tcp(s: TcpStream) -> Io {
        // Every frame batch is one write; Nagle would only add latency.
        let _ = s.set_nodelay(true);
        let peer = s
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let (r, w) = s.into_split();
        Io {
            read: Box::new(r),
            write: Box::new(w),
            peer,
        }
    }

    fn unix(s: UnixStream, peer: String) -> Io {
        let (r, w) = s.into_split();
        Io {
            read: Box::new(r),
            write: Box::new(w),
            peer,
        }
    }

    fn pipe(s: DuplexStream, peer: String) -> Io {
        let (r, w) = tokio::io::split(s);
        Io {
            read: Box::new(r),
            write: Box::new(w),
            peer,
        }
    }
}

type InprocRegistry = Mutex<HashMap<String, mpsc::Sender<DuplexStream>>>;

fn inproc_registry() -> &'static InprocRegistry {
    static REG: OnceLock<InprocRegistry> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// A bound endpoint accepting connections.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Ipc(UnixListener, PathBuf),
    Inproc(mpsc::Receiver<DuplexStream>, String),
}

impl Listener {
    /// Binds `ep`; returns the listener and the endpoint actually bound (the real port
    /// for `tcp://...:0`).
    pub async fn bind(ep: &Endpoint) -> Result<(Listener, Endpoint), SocketError> {
        let io_err = |error| SocketError::Io {
            endpoint: ep.to_string(),
            error,
        };
        match ep {
            Endpoint::Tcp { host, port } => {
                let l = TcpListener::bind(Endpoint::tcp_addr(host, *port))
                    .await
                    .map_err(io_err)?;
                let port = l.local_addr().map_err(io_err)?.port();
                Ok((
                    Listener::Tcp(l),
                    Endpoint::Tcp {
                        host: host.clone(),
                        port,
                    },
                ))
            }
            Endpoint::Ipc(path) => {
                // As libzmq: a stale socket file from an earlier process is replaced.
                let _ = std::fs::remove_file(path);
                let l = UnixListener::bind(path).map_err(io_err)?;
                Ok((Listener::Ipc(l, path.clone()), ep.clone()))
            }
            Endpoint::Inproc(name) => {
                let mut reg = lock(inproc_registry());
                if reg.get(name).is_some_and(|tx| !tx.is_closed()) {
                    return Err(io_err(std::io::ErrorKind::AddrInUse.into()));
                }
                let (tx, rx) = mpsc::channel(64);
                reg.insert(name.clone(), tx);
                Ok((Listener::Inproc(rx, name.clone()), ep.clone()))
            }
        }
    }

    /// The next incoming connection.
    pub async fn accept(&mut self) -> std::io::Result<Io> {
        match self {
            Listener::Tcp(l) => Ok(Io::tcp(l.accept().await?.0)),
            Listener::Ipc(l, path) => {
                let (s, _) = l.accept().await?;
                Ok(Io::unix(s, path.display().to_string()))
            }
            Listener::Inproc(rx, name) => match rx.recv().await {
                Some(s) => Ok(Io::pipe(s, format!("inproc://{name}"))),
                None => Err(std::io::ErrorKind::BrokenPipe.into()),
            },
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        match self {
            Listener::Ipc(_, path) => {
                let _ = std::fs::remove_file(path);
            }
            Listener::Inproc(rx, name) => {
                rx.close();
                let mut reg = lock(inproc_registry());
                if reg.get(name).is_some_and(|tx| tx.is_closed()) {
                    reg.remove(name);
                }
            }
            Listener::Tcp(_) => {}
        }
    }
}

/// Opens one connection to `ep`.
pub(crate) async fn connect(ep: &Endpoint) -> std::io::Result<Io> {
    match ep {
        Endpoint::Tcp { host, port } => Ok(Io::tcp(
            TcpStream::connect(Endpoint::tcp_addr(host, *port)).await?,
        )),
        Endpoint::Ipc(path) => Ok(Io::unix(
            UnixStream::connect(path).await?,
            path.display().to_string(),
        )),
        Endpoint::Inproc(name) => {
            let tx = lock(inproc_registry())
                .get(name)
                .cloned()
                .ok_or(std::io::ErrorKind::ConnectionRefused)?;
            let (ours, theirs) = tokio::io::duplex(INPROC_PIPE_BYTES);
            tx.send(theirs)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
            Ok(Io::pipe(ours, format!("inproc://{name}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "tcp://127.0.0.1:5555",
            "tcp://*:5555",
            "tcp://localhost:0",
            "tcp://[::1]:9",
            "ipc:///tmp/x.sock",
            "inproc://name",
        ] {
            let ep: Endpoint = s.parse().unwrap();
            assert_eq!(ep.to_string(), s);
        }
        assert_eq!("tcp://*:*".parse::<Endpoint>().unwrap().port(), Some(0));
        for bad in [
            "",
            "tcp://",
            "tcp://host",
            "tcp://:5",
            "tcp://h:99999",
            "udp://h:1",
            "ipc://",
            "inproc://",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
