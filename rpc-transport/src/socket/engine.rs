//! The tokio task that drives one connection: reads bytes into the sans-IO
//! [`Connection`], writes what it queues, hands messages to the socket and takes the
//! messages the socket routes to this peer. One task per connection, no other hop.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::core::{Core, Inbound, PeerGuard};
use super::endpoint::Io;
use super::recv_buf::RecvBuf;
use crate::message::Outgoing;
use crate::zmtp::{Connection, ConnectionConfig, Event, TxQueue, ZmtpError};

/// Stop taking messages from the socket while this much waits to be written.
const TX_HIGH: usize = 256 * 1024;
/// IoSlices per vectored write.
const MAX_SLICES: usize = 64;
/// Time allowed to deliver an ERROR command before closing.
const ERROR_FLUSH: Duration = Duration::from_millis(100);

/// How a connection ended.
#[derive(Debug)]
enum End {
    Eof,
    Io(std::io::Error),
    Protocol(ZmtpError),
    Rejected(super::SocketError),
    Shutdown,
}

/// Runs one connection until it ends. Returns whether the handshake completed (the
/// connect loop resets its backoff then).
pub(crate) async fn run(core: Arc<Core>, io: Io) -> bool {
    let id = core.next_peer_id();
    let span = tracing::debug_span!("zmtp", peer = %io.peer, conn = id);
    let mut handshaken = false;
    let end = drive(&core, io, id, &mut handshaken)
        .instrument(span.clone())
        .await;
    span.in_scope(|| match &end {
        End::Eof | End::Shutdown => tracing::debug!(?end, "connection closed"),
        End::Io(e) => tracing::debug!(error = %e, "connection lost"),
        End::Protocol(e) => tracing::warn!(error = %e, "closing connection: protocol violation"),
        End::Rejected(e) => tracing::warn!(error = %e, "closing connection: rejected"),
    });
    handshaken
}

fn connection_config(core: &Core) -> ConnectionConfig {
    let o = &core.opts;
    ConnectionConfig {
        socket_type: core.kind,
        identity: o.identity.clone(),
        max_message_size: o.max_message_size as u64,
        handshake_timeout: o.handshake_timeout,
        heartbeat: o.heartbeat,
        heartbeat_zmtp30: o.heartbeat_zmtp30,
        properties: Vec::new(),
    }
}

async fn drive(core: &Arc<Core>, io: Io, id: u64, handshaken: &mut bool) -> End {
    let Io {
        mut read,
        mut write,
        ..
    } = io;
    let mut stop = core.shutdown_signal();
    if *stop.borrow_and_update() {
        return End::Shutdown;
    }
    let mut conn = Connection::new(connection_config(core), Instant::now().into_std());
    let (out_tx, mut out_rx) = mpsc::channel(core.opts.send_hwm.max(1));
    let mut out_tx = Some(out_tx);
    let mut reply_tx: Option<mpsc::Sender<Outgoing>> = None;
    let mut guard: Option<PeerGuard> = None;
    let mut pending: Option<Inbound> = None;
    let mut rbuf = RecvBuf::new();
    // One timer for the connection's life, moved when the state machine's next
    // deadline changes (not a new timer registration per loop turn).
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // Registered once, not at every loop turn (it takes the watch's lock to register).
    let stopped = stop.changed();
    tokio::pin!(stopped);

    loop {
        // Hand over what the connection decoded, until the socket's queue is full.
        while pending.is_none() {
            match conn.poll_event() {
                None => break,
                Some(Event::Ready(info)) => {
                    let Some(tx) = out_tx.take() else { break };
                    reply_tx = Some(tx.clone());
                    match core.add_peer(id, &info, tx) {
                        Ok(g) => {
                            tracing::debug!(peer_type = %info.socket_type, minor = info.minor, "handshake complete");
                            guard = Some(g);
                            *handshaken = true;
                        }
                        Err(e) => return End::Rejected(e),
                    }
                }
                Some(Event::Message(msg)) => {
                    let (Some(g), Some(reply)) = (&guard, &reply_tx) else {
                        continue;
                    };
                    let inbound = Inbound {
                        peer: id,
                        routing_id: g.routing_id.clone(),
                        msg,
                        reply: reply.clone(),
                    };
                    if let Some(sink) = core.direct.get() {
                        sink(inbound);
                        continue;
                    }
                    match core.inbound_tx.try_send(inbound) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(i)) => pending = Some(i),
                        Err(mpsc::error::TrySendError::Closed(_)) => return End::Shutdown,
                    }
                }
            }
        }

        let deadline = conn.poll_timeout().map(Instant::from_std);
        if deadline != armed {
            timer.as_mut().reset(deadline.unwrap_or(far));
            armed = deadline;
        }
        let want_write = !conn.transmit().is_empty();
        let take_more = guard.is_some() && conn.transmit().len() < TX_HIGH;
        let mut room = 0;
        if pending.is_none() {
            let need = conn.read_hint(rbuf.current());
            let want = rbuf.plan(need, || Instant::now().into_std());
            let buf = rbuf.current();
            buf.reserve(want);
            room = buf.capacity() - buf.len();
        }
        tokio::select! {
            biased;
            _ = &mut stopped => {
                linger(core, &mut conn, &mut out_rx, &mut write).await;
                return End::Shutdown;
            }
            r = write_some(&mut write, conn.transmit()), if want_write => match r {
                Ok(0) => return End::Eof,
                Ok(n) => conn.transmit().advance(n),
                Err(e) => return End::Io(e),
            },
            permit = core.inbound_tx.reserve(), if pending.is_some() => match permit {
                Ok(permit) => permit.send(pending.take().expect("guarded by the branch condition")),
                Err(_) => return End::Shutdown,
            },
            r = read.read_buf(rbuf.current()), if pending.is_none() => match r {
                Ok(0) => return End::Eof,
                Ok(n) => {
                    rbuf.on_read(n, room);
                    if let Err(e) = conn.handle_input(rbuf.current(), Instant::now().into_std()) {
                        flush_error(&mut conn, &mut write).await;
                        return End::Protocol(e);
                    }
                    rbuf.after_decode();
                }
                Err(e) => return End::Io(e),
            },
            m = out_rx.recv(), if take_more => {
                let Some(m) = m else { return End::Shutdown };
                // Take everything already queued: one write for the whole batch.
                let mut next = Some(m);
                while let Some(m) = next {
                    if conn.send_frames(&m.frames, m.joined).is_err() {
                        break;
                    }
                    next = if conn.transmit().len() < TX_HIGH { out_rx.try_recv().ok() } else { None };
                }
            }
            _ = &mut timer, if deadline.is_some() => {
                armed = None;
                if let Err(e) = conn.handle_timeout(Instant::now().into_std()) {
                    flush_error(&mut conn, &mut write).await;
                    return End::Protocol(e);
                }
            }
        }
    }
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

async fn write_some(w: &mut Writer, tx: &mut TxQueue) -> std::io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let n = tx.io_slices(&mut slices);
    w.write_vectored(&slices[..n]).await
}

async fn flush_all(w: &mut Writer, conn: &mut Connection) -> std::io::Result<()> {
    while !conn.transmit().is_empty() {
        let n = write_some(w, conn.transmit()).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        conn.transmit().advance(n);
    }
    w.flush().await
}

/// Best effort: deliver the ERROR command the connection queued, briefly.
async fn flush_error(conn: &mut Connection, w: &mut Writer) {
    let _ = tokio::time::timeout(ERROR_FLUSH, flush_all(w, conn)).await;
}

/// On close: send what the socket queued for this peer, for at most the linger time.
async fn linger(
    core: &Core,
    conn: &mut Connection,
    out_rx: &mut mpsc::Receiver<Outgoing>,
    w: &mut Writer,
) {
    out_rx.close();
    if conn.is_active() {
        while let Ok(m) = out_rx.try_recv() {
            if conn.send_frames(&m.frames, m.joined).is_err() {
                break;
            }
        }
    }
    if core.opts.linger.is_zero() {
        return;
    }
    let _ = tokio::time::timeout(core.opts.linger, flush_all(w, conn)).await;
}
