//! Pools that change at run time: endpoints added and removed, and a stream of changes
//! followed. Servers and clients run in one process over `inproc://`, in paused time.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use zmtp_rpc::{rpc_service, Balance, Client, PoolChange, Server, ServerHandle};

#[rpc_service(name = "who")]
pub trait Who {
    /// Which server answered (its number), after `ms` milliseconds.
    async fn who(&self, ms: u64) -> u32;
}

/// Server number `.0`, which takes `.1` milliseconds more for every call.
struct Named(u32, u64);

impl Who for Named {
    async fn who(&self, ms: u64) -> u32 {
        tokio::time::sleep(Duration::from_millis(ms + self.1)).await;
        self.0
    }
}

/// Starts server number `n` on a fresh `inproc://` endpoint.
async fn server(n: u32) -> (ServerHandle, String) {
    slow_server(n, 0).await
}

/// Starts server number `n`, taking `delay_ms` for every call.
async fn slow_server(n: u32, delay_ms: u64) -> (ServerHandle, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ep = format!("inproc://pool-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let s = Server::builder()
        .bind(&ep)
        .add_service(WhoServer::new(Named(n, delay_ms)))
        .start()
        .await
        .unwrap();
    (s, ep)
}

/// Which servers answered `n` calls, counted per server number.
async fn spread(who: &WhoClient, n: usize) -> [usize; 4] {
    let mut seen = [0; 4];
    for _ in 0..n {
        seen[who.who(0).await.unwrap() as usize] += 1;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_added_at_run_time_gets_calls() {
    let (_a, ep_a) = server(0).await;
    let client = Client::builder()
        .endpoint(ep_a)
        .balance(Balance::RoundRobin)
        .connect()
        .await
        .unwrap();
    // The typed client is built over the same pool as the raw one.
    let who = WhoClient::new(client.clone());
    assert_eq!(spread(&who, 10).await, [10, 0, 0, 0]);
    let (_b, ep_b) = server(1).await;
    client.add_endpoint(&ep_b).unwrap();
    // Adding it again changes nothing.
    client.add_endpoint(&ep_b).unwrap();
    assert!(client.wait_healthy(2, Duration::from_secs(5)).await);
    let seen = spread(&who, 10).await;
    assert_eq!(seen, [5, 5, 0, 0], "round-robin over both");
    assert_eq!(client.endpoints().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_removed_endpoint_gets_no_new_call_and_its_calls_in_flight_finish() {
    let (a, ep_a) = server(0).await;
    let (_b, ep_b) = server(1).await;
    let client = Client::builder()
        .endpoints([ep_a.clone(), ep_b])
        .balance(Balance::RoundRobin)
        .connect()
        .await
        .unwrap();
    assert!(client.wait_healthy(2, Duration::from_secs(5)).await);
    let who = WhoClient::new(client.clone());
    // Two slow calls: round-robin puts one on each; A's is in flight when A goes.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let who = who.clone();
            tokio::spawn(async move { who.who(300).await })
        })
        .collect();
    while a.stats().executed == 0 {
        tokio::task::yield_now().await;
    }
    assert!(client.remove_endpoint(&ep_a));
    assert!(!client.remove_endpoint(&ep_a), "already removed");
    let before = a.stats().requests;
    assert_eq!(spread(&who, 20).await, [0, 20, 0, 0], "no new call to A");
    assert_eq!(a.stats().requests, before);
    let mut answered = Vec::new();
    for call in slow {
        answered.push(call.await.unwrap().unwrap());
    }
    answered.sort();
    assert_eq!(answered, [0, 1], "A's call in flight finished there");
    let eps: Vec<String> = client.endpoints().into_iter().map(|e| e.endpoint).collect();
    assert!(!eps.contains(&ep_a), "{eps:?}");
    // Its calls done, its connection closes.
    let closed = async {
        while a.stats().connections > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the removed endpoint's connection closes");
    // Brought back, it serves again.
    client.add_endpoint(&ep_a).unwrap();
    assert!(client.wait_healthy(2, Duration::from_secs(5)).await);
    let seen = spread(&who, 10).await;
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
}

/// A stream of the changes sent on a channel.
struct Changes(mpsc::UnboundedReceiver<PoolChange>);

impl futures_core::Stream for Changes {
    type Item = PoolChange;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolChange>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_follows_a_stream_of_pool_changes() {
    let (tx, rx) = mpsc::unbounded_channel();
    // No endpoint yet: calls wait for discovery (within their deadline).
    let client = Client::builder()
        .discover(Changes(rx))
        .balance(Balance::RoundRobin)
        .connect()
        .await
        .unwrap();
    let who = WhoClient::new(client.clone());
    let first = tokio::spawn({
        let who = who.clone();
        async move { who.who(0).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_a, ep_a) = server(0).await;
    tx.send(PoolChange::Insert(ep_a.clone())).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 0);
    let (_b, ep_b) = server(1).await;
    tx.send(PoolChange::Insert(ep_b)).unwrap();
    assert!(client.wait_healthy(2, Duration::from_secs(5)).await);
    tx.send(PoolChange::Remove(ep_a)).unwrap();
    let removed = async {
        while client.endpoints().len() > 1 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), removed)
        .await
        .expect("the removal is followed");
    assert_eq!(spread(&who, 10).await, [0, 10, 0, 0]);
    // A bad address is refused (logged) and the rest goes on.
    tx.send(PoolChange::Insert("nonsense".into())).unwrap();
    let (_c, ep_c) = server(2).await;
    tx.send(PoolChange::Insert(ep_c)).unwrap();
    assert!(client.wait_healthy(2, Duration::from_secs(5)).await);
    let seen = spread(&who, 10).await;
    assert_eq!(seen, [0, 5, 5, 0]);
}

/// Calls per server of 16 callers making 50 calls each, balanced by `balance`, over
/// three servers of which server 2 is ten times slower (20 ms against 2 ms).
async fn shares(balance: Balance) -> [usize; 4] {
    let mut servers = Vec::new();
    for (n, delay) in [(0, 2), (1, 2), (2, 20)] {
        servers.push(slow_server(n, delay).await);
    }
    let client = Client::builder()
        .endpoints(servers.iter().map(|(_, ep)| ep.clone()))
        .balance(balance)
        .connect()
        .await
        .unwrap();
    assert!(client.wait_healthy(3, Duration::from_secs(5)).await);
    let who = WhoClient::new(client);
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let who = who.clone();
            tokio::spawn(async move { spread(&who, 50).await })
        })
        .collect();
    let mut total = [0; 4];
    for c in callers {
        for (t, n) in total.iter_mut().zip(c.await.unwrap()) {
            *t += n;
        }
    }
    total
}

#[tokio::test(start_paused = true)]
async fn power_of_two_choices_routes_around_a_slow_server() {
    let rr = shares(Balance::RoundRobin).await;
    assert!(
        rr[2] >= 250,
        "round-robin gives the slow one its third: {rr:?}"
    );
    let p2c = shares(Balance::PowerOfTwoChoices).await;
    assert!(p2c[2] < 80, "p2c sends the slow one under 10%: {p2c:?}");
    assert!(p2c[2] > 0, "but still measures it: {p2c:?}");
}

/// The slowest of `n` sequential calls, and the client's hedges, with `hedge` on a
/// round-robin pool of two 2 ms servers and one 50 ms server.
async fn slowest_with(hedge: Option<Duration>, n: usize) -> (Duration, u64) {
    let mut servers = Vec::new();
    for (i, delay) in [(0, 2), (1, 2), (2, 50)] {
        servers.push(slow_server(i, delay).await);
    }
    let mut b = Client::builder()
        .endpoints(servers.iter().map(|(_, ep)| ep.clone()))
        .balance(Balance::RoundRobin);
    if let Some(d) = hedge {
        b = b.hedge(d);
    }
    let client = b.connect().await.unwrap();
    assert!(client.wait_healthy(3, Duration::from_secs(5)).await);
    let who = WhoClient::new(client.clone());
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t0 = tokio::time::Instant::now();
        who.who(0).await.unwrap();
        slowest = slowest.max(t0.elapsed());
    }
    (slowest, client.stats().hedges)
}

#[tokio::test(start_paused = true)]
async fn a_hedged_call_is_answered_by_the_faster_server() {
    let (slowest, hedges) = slowest_with(None, 30).await;
    assert!(slowest >= Duration::from_millis(50), "{slowest:?}");
    assert_eq!(hedges, 0);
    let (slowest, hedges) = slowest_with(Some(Duration::from_millis(10)), 30).await;
    // About a third of the calls go to the slow server (hedges draw turns too); after
    // 10 ms a copy goes to a fast
    // one, whose answer (2 ms later) ends the call.
    assert!(slowest < Duration::from_millis(20), "{slowest:?}");
    assert!((8..=20).contains(&hedges), "{hedges} hedges for 30 calls");
}

/// Sixteen callers, 50 calls each after 10 to warm up, over p2c with two 2 ms servers and a 20 ms one,
/// hedged after 10 ms: how many calls took longer than the hedge delay, and the
/// attempts per call.
async fn late_with_p2c_and_hedging() -> (usize, f64) {
    let mut servers = Vec::new();
    for (i, delay) in [(0, 2), (1, 2), (2, 20)] {
        servers.push(slow_server(i, delay).await);
    }
    let client = Client::builder()
        .endpoints(servers.iter().map(|(_, ep)| ep.clone()))
        .hedge(Duration::from_millis(10))
        .connect()
        .await
        .unwrap();
    assert!(client.wait_healthy(3, Duration::from_secs(5)).await);
    let who = WhoClient::new(client.clone());
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let who = who.clone();
            tokio::spawn(async move {
                let mut late = 0;
                // The first calls measure the servers (a server not yet measured
                // counts as quick); the next 50 are counted.
                for i in 0..60 {
                    let t0 = tokio::time::Instant::now();
                    who.who(0).await.unwrap();
                    late += usize::from(i >= 10 && t0.elapsed() >= Duration::from_millis(10));
                }
                late
            })
        })
        .collect();
    let mut late = 0;
    for c in callers {
        late += c.await.unwrap();
    }
    let stats = client.stats();
    (late, stats.attempts as f64 / stats.calls as f64)
}

#[tokio::test(start_paused = true)]
async fn a_server_estimated_slower_than_the_hedge_delay_is_left_out() {
    let (late, attempts) = late_with_p2c_and_hedging().await;
    // Once the slow server's first replies measured it past the hedge delay, p2c
    // gives its draws to the others (the slow one is tried again when its estimate
    // decays): no call waits for the hedge delay.
    assert!(late <= 2, "{late} of 800 calls waited past the hedge delay");
    assert!(attempts <= 1.1, "{attempts:.3} attempts per call");
}

/// The members a client's aperture draws from, and those that answered since `before`.
fn window_and_answered(client: &Client, before: &[u64]) -> (Vec<String>, Vec<String>) {
    let eps = client.endpoints();
    let window = eps
        .iter()
        .filter(|e| e.in_aperture)
        .map(|e| e.endpoint.clone());
    let answered = eps
        .iter()
        .zip(before)
        .filter(|(e, b)| e.replies > **b)
        .map(|(e, _)| e.endpoint.clone());
    (window.collect(), answered.collect())
}

/// `callers` callers making `calls` calls of `ms` each, all at once.
async fn busy(who: &WhoClient, callers: usize, calls: usize, ms: u64) {
    let callers: Vec<_> = (0..callers)
        .map(|_| {
            let who = who.clone();
            tokio::spawn(async move {
                for _ in 0..calls {
                    who.who(ms).await.unwrap();
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
}

/// Shuts down the first member of `window`, makes 200 calls, and returns the window
/// after them (three members, the stopped one not among them) and who answered.
async fn stop_a_member(
    servers: &mut Vec<(ServerHandle, String)>,
    window: &[String],
    client: &Client,
    who: &WhoClient,
) -> (Vec<String>, Vec<String>) {
    let gone = servers.iter().position(|(_, ep)| *ep == window[0]).unwrap();
    let (handle, ep) = servers.swap_remove(gone);
    handle.shutdown().await;
    let before = replies(client);
    for _ in 0..200 {
        who.who(0).await.unwrap();
    }
    let (after, answered) = window_and_answered(client, &before);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.contains(&ep), "{ep} still in {after:?}");
    (after, answered)
}

fn replies(client: &Client) -> Vec<u64> {
    client.endpoints().iter().map(|e| e.replies).collect()
}

#[tokio::test(start_paused = true)]
async fn an_aperture_calls_a_window_that_follows_load_and_failures() {
    let mut servers = Vec::new();
    for n in 0..12 {
        servers.push(server(n).await);
    }
    let client = Client::builder()
        .endpoints(servers.iter().map(|(_, ep)| ep.clone()))
        .aperture(zmtp_rpc::Aperture::new())
        .connect()
        .await
        .unwrap();
    assert!(client.wait_healthy(12, Duration::from_secs(5)).await);
    let who = WhoClient::new(client.clone());

    // One caller: three members of the twelve, and only they, answer.
    let before = replies(&client);
    for _ in 0..200 {
        who.who(0).await.unwrap();
    }
    let (window, answered) = window_and_answered(&client, &before);
    assert_eq!(window.len(), 3, "{window:?}");
    assert_eq!(answered, window);

    // Twenty-four callers of 10 ms calls: over four calls in flight per member, the
    // window grows to about six.
    busy(&who, 24, 40, 10).await;
    let (window, _) = window_and_answered(&client, &before);
    assert!((5..=7).contains(&window.len()), "{window:?}");

    // Quiet again: back to three.
    for _ in 0..400 {
        who.who(0).await.unwrap();
    }
    let (window, _) = window_and_answered(&client, &before);
    assert_eq!(window.len(), 3, "{window:?}");

    // A member of the window stops: another takes its place, no call fails.
    let (after, answered) = stop_a_member(&mut servers, &window, &client, &who).await;
    assert_eq!(after.iter().filter(|e| window.contains(e)).count(), 2);
    assert_eq!(answered, after);
}

/// The endpoints the client holds a connection to.
fn connected(client: &Client) -> Vec<String> {
    client
        .endpoints()
        .into_iter()
        .filter(|e| e.connections > 0)
        .map(|e| e.endpoint)
        .collect()
}

/// Client connections the servers hold, all together.
fn server_connections(servers: &[(ServerHandle, String)]) -> u64 {
    servers.iter().map(|(s, _)| s.stats().connections).sum()
}

/// Twelve servers, and a client of them all with a lazy aperture of `linger`.
async fn lazy_pool(linger: Duration) -> (Vec<(ServerHandle, String)>, Client, WhoClient) {
    let mut servers = Vec::new();
    for n in 0..12 {
        servers.push(server(n).await);
    }
    let client = Client::builder()
        .endpoints(servers.iter().map(|(_, ep)| ep.clone()))
        .aperture(zmtp_rpc::Aperture::new().lazy(linger))
        .connect()
        .await
        .unwrap();
    let who = WhoClient::new(client.clone());
    (servers, client, who)
}

#[tokio::test(start_paused = true)]
async fn a_lazy_aperture_connects_only_its_window() {
    let linger = Duration::from_secs(2);
    let (mut servers, client, who) = lazy_pool(linger).await;
    // Nothing is connected before the first call chooses a window.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(connected(&client).is_empty(), "{:?}", connected(&client));
    assert_eq!(server_connections(&servers), 0);
    let idle = |client: &Client| {
        client
            .endpoints()
            .into_iter()
            .filter(|e| e.health == zmtp_rpc::HealthState::Idle)
            .count()
    };
    assert_eq!(idle(&client), 12);

    // One caller: the three members of the window, and only they, are connected.
    let before = replies(&client);
    for _ in 0..200 {
        who.who(0).await.unwrap();
    }
    let (window, answered) = window_and_answered(&client, &before);
    assert_eq!(window.len(), 3, "{window:?}");
    assert_eq!(answered, window);
    assert_eq!(connected(&client), window);
    assert_eq!(server_connections(&servers), 3);

    // Load grows the window, and each member taken in is connected.
    busy(&who, 24, 40, 10).await;
    let (grown, _) = window_and_answered(&client, &before);
    assert!((5..=7).contains(&grown.len()), "{grown:?}");
    let now_connected = connected(&client);
    assert!(grown.iter().all(|e| now_connected.contains(e)));

    // Quiet again: the window shrinks at once, the members that left it stay
    // connected for the linger, then close.
    for _ in 0..400 {
        who.who(0).await.unwrap();
    }
    let (window, _) = window_and_answered(&client, &before);
    assert_eq!(window.len(), 3, "{window:?}");
    assert!(connected(&client).len() > 3, "closed before the linger");
    tokio::time::sleep(linger + Duration::from_millis(10)).await;
    for _ in 0..200 {
        who.who(0).await.unwrap();
    }
    assert_eq!(connected(&client), window);
    assert_eq!(idle(&client), 9);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server_connections(&servers), 3);

    // A member of the window stops: another is connected in its place, no call fails.
    let (after, answered) = stop_a_member(&mut servers, &window, &client, &who).await;
    assert_eq!(answered, after);
    let newcomer = after.iter().find(|e| !window.contains(e)).unwrap();
    assert!(connected(&client).contains(newcomer));
    assert_eq!(client.stats().failed, 0);
}

/// A client that stops calling: its lazy aperture's window shrinks to its minimum and
/// the members that left it are closed after the linger, with no call to tend them.
#[tokio::test(start_paused = true)]
async fn a_lazy_aperture_of_a_quiet_client_closes_what_it_lingers_on() {
    let linger = Duration::from_secs(2);
    let (servers, client, who) = lazy_pool(linger).await;
    busy(&who, 24, 40, 10).await;
    let grown = connected(&client);
    assert!(grown.len() >= 5, "{grown:?}");

    // No call from here on. Nothing closes before a member has been out of the
    // window for the linger...
    tokio::time::sleep(linger).await;
    assert_eq!(connected(&client), grown, "closed before the linger");
    // ...and what left it is closed within a few lingers more.
    tokio::time::sleep(2 * linger).await;
    let left = connected(&client);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left.iter().all(|e| grown.contains(e)),
        "{left:?} of {grown:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server_connections(&servers), 3);

    // Calls come again: they go to the three still connected, nothing new connects.
    let before = replies(&client);
    for _ in 0..100 {
        who.who(0).await.unwrap();
    }
    let (window, answered) = window_and_answered(&client, &before);
    assert_eq!(window, left);
    assert_eq!(answered, left);
    assert_eq!(connected(&client), left);
    assert_eq!(client.stats().failed, 0);
}

/// Callers starting at once on several threads: while one pick chooses the first
/// window, the others must not take the empty window for "the whole pool" and connect
/// every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lazy_aperture_started_by_many_callers_at_once_connects_its_window() {
    let mut servers = Vec::new();
    for n in 0..12 {
        servers.push(server(n).await);
    }
    for _ in 0..5 {
        let client = Client::builder()
            .endpoints(servers.iter().map(|(_, ep)| ep.clone()))
            .aperture(zmtp_rpc::Aperture::new().lazy(Duration::from_secs(60)))
            .connect()
            .await
            .unwrap();
        let who = WhoClient::new(client.clone());
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (who, start) = (who.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    who.who(0).await.unwrap();
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        // Sixteen calls in flight grow a window of 3 to 4 at most (over 4 a member).
        let n = connected(&client).len();
        assert!((3..=6).contains(&n), "{n} of 12 connected");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lazy_aperture_over_a_pool_that_refuses_fails_fast_once_all_were_tried() {
    // Five endpoints nobody serves: the window (3) is tried, then the rest.
    let eps: Vec<String> = (0..5).map(|i| format!("inproc://nobody-{i}")).collect();
    let client = Client::builder()
        .endpoints(eps.iter().cloned())
        .aperture(zmtp_rpc::Aperture::new().lazy(Duration::from_secs(60)))
        .call_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let who = WhoClient::new(client.clone());
    let started = tokio::time::Instant::now();
    let e = who.who(0).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?}: {e}",
        started.elapsed()
    );
    assert!(matches!(e, zmtp_rpc::RpcError::Unavailable { .. }), "{e:?}");
    // Every member was tried: none is left idle.
    let idle = client
        .endpoints()
        .iter()
        .filter(|e| e.health == zmtp_rpc::HealthState::Idle)
        .count();
    assert_eq!(idle, 0, "{:?}", client.endpoints());
}

#[tokio::test(start_paused = true)]
async fn coordinated_lazy_apertures_cover_the_pool_evenly() {
    let mut servers = Vec::new();
    for n in 0..12 {
        servers.push(server(n).await);
    }
    let eps: Vec<String> = servers.iter().map(|(_, ep)| ep.clone()).collect();
    // Four clients alike, each told its place: windows of 12 / 4 = 3, side by side.
    let mut clients = Vec::new();
    for index in 0..4 {
        let aperture = zmtp_rpc::Aperture::new()
            .coordinate(index, 4)
            .lazy(Duration::from_secs(60));
        let client = Client::builder()
            .endpoints(eps.iter().cloned())
            .aperture(aperture)
            .connect()
            .await
            .unwrap();
        let who = WhoClient::new(client.clone());
        for _ in 0..100 {
            who.who(0).await.unwrap();
        }
        clients.push(client);
    }
    let mut windows: Vec<String> = Vec::new();
    for client in &clients {
        let (window, _) = window_and_answered(client, &[0; 12]);
        assert_eq!(window.len(), 3, "{window:?}");
        assert_eq!(connected(client), window);
        windows.extend(window);
    }
    // Every server in exactly one window, holding exactly one connection.
    windows.sort();
    let mut all = eps.clone();
    all.sort();
    assert_eq!(windows, all);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (s, ep) in &servers {
        assert_eq!(s.stats().connections, 1, "{ep}");
    }
}

#[tokio::test]
async fn an_aperture_with_bad_settings_or_another_balance_is_refused() {
    let build = || Client::builder().endpoint("tcp://127.0.0.1:1");
    let e = build()
        .aperture(zmtp_rpc::Aperture::new().min(1))
        .connect()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("aperture min 1 is below 2"), "{e}");
    let e = build()
        .aperture(zmtp_rpc::Aperture::new().coordinate(4, 4))
        .connect()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("aperture coordinate 4 of 4"), "{e}");
    let e = build()
        .aperture(zmtp_rpc::Aperture::new())
        .balance(Balance::RoundRobin)
        .connect()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("needs Balance::PowerOfTwoChoices"),
        "{e}"
    );
}
