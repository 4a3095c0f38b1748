//! CURVE end to end: typed clients and servers, an allow-list, refusals that say why,
//! and libzmq (pyzmq) peers on either side.

#[allow(dead_code)]
#[path = "../examples/common/calc.rs"]
mod calc;
mod support;

use std::time::Duration;

use calc::{CalcClient, CalcServer, MyCalc};
use serde::Serialize;
use support::PyPeer;
use zmtp_rpc::{rpc_service, Client, KeyPair, RequestContext, RpcError, Server, ServerHandle};

/// Tells a client the key it was authenticated by.
#[rpc_service(name = "whoami")]
pub trait WhoAmI {
    /// The caller's CURVE public key as the handler sees it, in Z85.
    async fn key(&self) -> Option<String>;
}

struct Me;

impl WhoAmI for Me {
    async fn key(&self) -> Option<String> {
        RequestContext::current()
            .and_then(|c| c.client_key)
            .map(|k| k.to_z85())
    }
}

/// A CURVE server of the calculator allowing `clients` (all when `None`).
async fn server(keys: &KeyPair, clients: Option<Vec<KeyPair>>) -> (ServerHandle, String) {
    let mut b = Server::builder()
        .curve(keys.clone())
        .add_service(CalcServer::new(MyCalc))
        .add_service(WhoAmIServer::new(Me));
    if let Some(list) = clients {
        b = b.allow_clients(list.iter().map(KeyPair::public));
    }
    support::serve_tcp(b).await
}

/// A client of `ep` with the CURVE key pair `keys`, trusting the server key `server`.
async fn curve_client(ep: &str, keys: KeyPair, server: zmtp_rpc::PublicKey) -> Client {
    Client::builder()
        .endpoint(ep)
        .curve(keys, server)
        .connect()
        .await
        .unwrap()
}

/// Calls until a call fails for the reason `why` names (the first may find the
/// handshake still under way); returns the error's text.
async fn refused(calc: &CalcClient, why: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = calc
            .add(1, 2)
            .await
            .expect_err("a refused client's call fails");
        let text = e.to_string();
        if text.contains(why) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not refused: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn typed_calls_travel_over_curve_to_an_allowed_client() {
    let (sk, ck) = (KeyPair::generate(), KeyPair::generate());
    let (server, ep) = server(&sk, Some(vec![ck.clone()])).await;
    let ck_public = ck.public();
    let client = curve_client(&ep, ck, sk.public()).await;
    let calc = CalcClient::new(client.clone());
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert_eq!(calc.div(10, 2).await.unwrap(), Ok(5));
    assert!(server.stats().executed >= 2);
    // The handler knows who called: the key the handshake authenticated.
    let me = WhoAmIClient::new(client).key().await.unwrap();
    assert_eq!(me, Some(ck_public.to_z85()));
}

/// Two servers with key pairs of their own: the client names the second's key for
/// its endpoint and reaches both; without it, the second refuses the handshake.
#[tokio::test]
async fn servers_with_their_own_keys_are_reached_with_a_key_per_endpoint() {
    let (sk1, sk2, ck) = (
        KeyPair::generate(),
        KeyPair::generate(),
        KeyPair::generate(),
    );
    let (s1, ep1) = server(&sk1, None).await;
    let (s2, ep2) = server(&sk2, None).await;
    let client = Client::builder()
        .endpoints([ep1.clone(), ep2.clone()])
        .curve(ck.clone(), sk1.public())
        .curve_server_key(&ep2, sk2.public())
        .connect()
        .await
        .unwrap();
    assert!(
        client.wait_healthy(2, Duration::from_secs(5)).await,
        "{:?}",
        client.stats()
    );
    // With the first server gone, calls go to the second, over its own key.
    s1.shutdown().await;
    let calc = CalcClient::new(client.clone());
    for _ in 0..5 {
        assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    }
    assert!(s2.stats().executed >= 5);

    // One key for both: the second server cannot open the client's HELLO.
    let one_key = curve_client(&ep2, ck, sk1.public()).await;
    let text = refused(&CalcClient::new(one_key), "server's public key").await;
    assert!(text.contains(&ep2), "{text}");
    s2.shutdown().await;
}

#[tokio::test]
async fn a_client_off_the_list_a_wrong_server_key_and_a_null_client_are_refused() {
    let (sk, ck) = (KeyPair::generate(), KeyPair::generate());
    let (server, ep) = server(&sk, Some(vec![ck.clone()])).await;
    // A key the server does not know.
    let stranger = curve_client(&ep, KeyPair::generate(), sk.public()).await;
    let text = refused(&CalcClient::new(stranger), "authentication failed").await;
    assert!(text.contains(&ep), "{text}");
    // The right client key, the wrong server key: the server cannot open its HELLO.
    let misled = curve_client(&ep, ck, KeyPair::generate().public()).await;
    let text = refused(&CalcClient::new(misled), "server's public key").await;
    assert!(text.contains(&ep), "{text}");
    // No security at all.
    let plain = Client::connect([ep.clone()]).await.unwrap();
    let text = refused(&CalcClient::new(plain), "mechanism").await;
    assert!(text.contains(&ep), "{text}");
    assert_eq!(server.stats().requests, 0, "no request got through");
}

#[derive(Serialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

/// A `calc.add` request as a plain REQ client sends it.
fn add_request(a: i64, b: i64) -> [Vec<u8>; 2] {
    let header = support::Hdr {
        v: 1,
        id: *uuid::Uuid::new_v4().as_bytes(),
        method: "calc.add",
        timeout_ms: 5000,
        attempt: 1,
    };
    [
        rmp_serde::to_vec_named(&header).unwrap(),
        rmp_serde::to_vec_named(&AddArgs { a, b }).unwrap(),
    ]
}

#[tokio::test]
async fn a_libzmq_curve_req_client_calls_our_server_and_one_off_the_list_is_refused() {
    let sk = KeyPair::generate();
    let mut boot = PyPeer::new("REQ", &[]).await;
    let keys = boot.ok("curve_keypair").await;
    let (_, py_secret) = keys.split_once(' ').unwrap();
    let py_keys = KeyPair::from_secret_z85(py_secret).unwrap();
    let (server, ep) = server(&sk, Some(vec![py_keys])).await;
    let opt = format!("curve_client={py_secret},{}", sk.public());
    let mut py = PyPeer::new("REQ", &[&opt]).await;
    py.connect(&ep).await;
    let [h, a] = add_request(40, 2);
    py.send(&[&h, &a]).await;
    let reply = py.recv(10_000).await.expect("our server answered libzmq");
    assert_eq!(reply.len(), 2, "{reply:?}");
    let body: i64 = rmp_serde::from_slice(&reply[1]).unwrap();
    assert_eq!(body, 42);
    // Another libzmq key, not on the list: no answer, and nothing runs.
    let other = KeyPair::generate();
    let opt = format!("curve_client={},{}", other.secret_z85(), sk.public());
    let mut stranger = PyPeer::new("REQ", &[&opt]).await;
    stranger.connect(&ep).await;
    let [h, a] = add_request(1, 1);
    stranger.send(&[&h, &a]).await;
    assert!(
        stranger.recv(500).await.is_none(),
        "a refused client got an answer"
    );
    assert_eq!(server.stats().requests, 1);
}

#[tokio::test]
async fn our_curve_client_calls_a_libzmq_curve_rep_server() {
    let mut boot = PyPeer::new("REP", &[]).await;
    let keys = boot.ok("curve_keypair").await;
    let (py_public, py_secret) = keys.split_once(' ').unwrap();
    let mut py = PyPeer::new("REP", &[&format!("curve_server={py_secret}")]).await;
    let ep = py.bind("tcp://127.0.0.1:0").await;
    py.ok("serve py").await;
    let client = curve_client(&ep, KeyPair::generate(), py_public.parse().unwrap()).await;
    for i in 0..3 {
        let body = format!("hello {i}");
        let reply = client.request(body.as_str()).await.unwrap();
        assert_eq!(&reply.frames()[0][..], format!("py:{body}").as_bytes());
    }
    // Multipart, and a frame of 8 MiB, both ways.
    let big = vec![0x33u8; 8 << 20];
    let client = Client::builder()
        .endpoint(&ep)
        .curve(KeyPair::generate(), py_public.parse().unwrap())
        .max_message_size(16 << 20)
        // 8 MiB each way through CURVE and Python: seconds on a busy machine.
        .attempt_timeout(Duration::from_secs(20))
        .call_timeout(Duration::from_secs(40))
        .connect()
        .await
        .unwrap();
    let reply = client
        .request(zmtp_rpc::Message::from(vec![bytes::Bytes::from(big)]))
        .await
        .unwrap();
    assert_eq!(reply.frames()[0].len(), 3 + (8 << 20));
    assert!(matches!(
        Client::builder()
            .endpoint(&ep)
            .connect()
            .await
            .unwrap()
            .request("plain")
            .await,
        Err(RpcError::Unavailable { .. })
    ));
}

// PLAIN: user names and passwords, in clear.

/// Tells a client the PLAIN user it was let in as.
#[rpc_service(name = "user")]
pub trait User {
    /// The caller's user name as the handler sees it.
    async fn name(&self) -> Option<String>;
}

struct Users;

impl User for Users {
    async fn name(&self) -> Option<String> {
        RequestContext::current().and_then(|c| c.user.map(|u| u.to_string()))
    }
}

/// A PLAIN server of the calculator that lets in "ann" with "secret".
async fn plain_server() -> (ServerHandle, String) {
    support::serve_tcp(
        Server::builder()
            .plain()
            .allow_users([("ann", "secret")])
            .add_service(CalcServer::new(MyCalc))
            .add_service(UserServer::new(Users)),
    )
    .await
}

#[tokio::test]
async fn plain_lets_a_known_user_in_tells_handlers_who_and_refuses_a_wrong_password() {
    let (server, ep) = plain_server().await;
    let ann = Client::builder()
        .endpoint(&ep)
        .plain("ann", "secret")
        .connect()
        .await
        .unwrap();
    assert_eq!(CalcClient::new(ann.clone()).add(1, 2).await.unwrap(), 3);
    assert_eq!(
        UserClient::new(ann).name().await.unwrap().as_deref(),
        Some("ann")
    );
    let guess = Client::builder()
        .endpoint(&ep)
        .plain("ann", "guess")
        .connect()
        .await
        .unwrap();
    let text = refused(&CalcClient::new(guess), "authentication failed").await;
    assert!(text.contains(&ep), "{text}");
    assert_eq!(server.stats().requests, 2);
}

/// pyzmq PLAIN clients of the server at `ep`: "ann" with "secret" gets an answer,
/// "ann" with "guess" none.
async fn libzmq_plain_clients(ep: &str) {
    let mut py = PyPeer::new("REQ", &["plain_client=ann,secret"]).await;
    py.connect(ep).await;
    let [h, a] = add_request(2, 2);
    py.send(&[&h, &a]).await;
    let reply = py.recv(10_000).await.expect("our server answered libzmq");
    assert_eq!(rmp_serde::from_slice::<i64>(&reply[1]).unwrap(), 4);
    let mut wrong = PyPeer::new("REQ", &["plain_client=ann,guess"]).await;
    wrong.connect(ep).await;
    wrong.send(&[&h, &a]).await;
    assert!(
        wrong.recv(500).await.is_none(),
        "a refused client got an answer"
    );
}

#[tokio::test]
async fn plain_both_ways_with_libzmq() {
    // A pyzmq PLAIN client calls our server; a wrong password gets nothing.
    let (server, ep) = plain_server().await;
    libzmq_plain_clients(&ep).await;
    assert_eq!(server.stats().requests, 1);
    // Our client calls a pyzmq PLAIN server.
    let mut rep = PyPeer::new("REP", &["plain_server=bob,pw"]).await;
    let rep_ep = rep.bind("tcp://127.0.0.1:0").await;
    rep.ok("serve py").await;
    let client = Client::builder()
        .endpoint(&rep_ep)
        .plain("bob", "pw")
        .connect()
        .await
        .unwrap();
    let reply = client.request("hi").await.unwrap();
    assert_eq!(&reply.frames()[0][..], b"py:hi");
    // libzmq's authenticator (ZAP) refuses a wrong password.
    let refused_client = Client::builder()
        .endpoint(&rep_ep)
        .plain("bob", "nope")
        .call_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let e = refused_client.request("hi").await.unwrap_err();
    assert!(
        matches!(e, RpcError::Unavailable { .. } | RpcError::DeadlineExceeded),
        "{e}"
    );
}

/// Raw sockets, as libzmq sets `ZMQ_CURVE_SERVERKEY` before each `zmq_connect`: a
/// DEALER reaches two CURVE ROUTERs with key pairs of their own.
#[tokio::test]
async fn a_raw_dealer_connects_to_curve_servers_with_their_own_keys() {
    use zmtp_rpc::transport::zmtp::Mechanism;
    use zmtp_rpc::transport::{DealerSocket, RouterSocket, SocketError, SocketOptions};
    use zmtp_rpc::Message;

    let router = |keys: &KeyPair| {
        RouterSocket::with_options(SocketOptions::default().mechanism(Mechanism::CurveServer {
            keys: keys.clone(),
            authorize: None,
        }))
    };
    let (sk1, sk2) = (KeyPair::generate(), KeyPair::generate());
    let (mut r1, mut r2) = (router(&sk1), router(&sk2));
    let ep1 = r1.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let ep2 = r2.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut dealer =
        DealerSocket::with_options(SocketOptions::default().mechanism(Mechanism::CurveClient {
            keys: KeyPair::generate(),
            server: sk1.public(),
        }));
    dealer.connect(&ep1).await.unwrap();
    dealer.connect_curve(&ep2, sk2.public()).await.unwrap();
    // Sent in turn once both are connected: each router gets one.
    let both = async {
        while dealer.peer_count() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("both CURVE handshakes complete");
    dealer.send(Message::single("a")).await.unwrap();
    dealer.send(Message::single("b")).await.unwrap();
    let t = Duration::from_secs(5);
    let got1 = tokio::time::timeout(t, r1.recv()).await.unwrap().unwrap();
    let got2 = tokio::time::timeout(t, r2.recv()).await.unwrap().unwrap();
    let mut bodies = vec![got1.frames()[1].clone(), got2.frames()[1].clone()];
    bodies.sort();
    assert_eq!(bodies, ["a", "b"]);

    // A socket that is not a CURVE client refuses a server key.
    let plain = DealerSocket::new();
    let e = plain.connect_curve(&ep1, sk1.public()).await.unwrap_err();
    assert!(matches!(e, SocketError::Config(_)), "{e}");
}

// The application's say: an asynchronous authenticator.

/// What the test's authenticator was asked, with the way to answer it.
type Asked = (
    zmtp_rpc::AuthRequest,
    tokio::sync::oneshot::Sender<zmtp_rpc::AuthDecision>,
);

/// A server whose authenticator hands every decision to the test through `asked`
/// (refused after 300 ms without an answer).
async fn asking_server(
    keys: Option<&KeyPair>,
) -> (ServerHandle, String, tokio::sync::mpsc::Receiver<Asked>) {
    let (tx, asked) = tokio::sync::mpsc::channel::<Asked>(8);
    let auth = zmtp_rpc::Authenticator::new(move |req| {
        let tx = tx.clone();
        async move {
            let (answer, answered) = tokio::sync::oneshot::channel();
            let _ = tx.send((req, answer)).await;
            answered
                .await
                .unwrap_or_else(|_| zmtp_rpc::AuthDecision::deny("no answer"))
        }
    })
    .timeout(Duration::from_millis(300));
    let b = match keys {
        Some(k) => Server::builder().curve(k.clone()),
        None => Server::builder().plain(),
    };
    let b = b
        .authenticate(auth)
        .add_service(CalcServer::new(MyCalc))
        .add_service(UserServer::new(Users));
    let (server, ep) = support::serve_tcp(b).await;
    (server, ep, asked)
}

async fn next_asked(asked: &mut tokio::sync::mpsc::Receiver<Asked>) -> Asked {
    tokio::time::timeout(Duration::from_secs(10), asked.recv())
        .await
        .expect("the authenticator is asked")
        .unwrap()
}

#[tokio::test]
async fn an_async_authenticator_decides_names_the_caller_and_refuses_with_its_reason() {
    let (sk, alice, bob, carol) = (
        KeyPair::generate(),
        KeyPair::generate(),
        KeyPair::generate(),
        KeyPair::generate(),
    );
    let (server, ep, mut asked) = asking_server(Some(&sk)).await;
    let client = |keys: &KeyPair| curve_client(&ep, keys.clone(), sk.public());

    // Alice's handshake waits for the decision; then her calls carry "alice".
    let a = client(&alice).await;
    let call = tokio::spawn({
        let users = UserClient::new(a.clone());
        async move { users.name().await }
    });
    let (req, answer) = next_asked(&mut asked).await;
    assert_eq!(req.mechanism, zmtp_rpc::AuthMechanism::Curve);
    assert_eq!(req.public_key, Some(alice.public()));
    assert!(req.peer_addr.starts_with("127.0.0.1:"), "{req:?}");
    assert!(
        !call.is_finished(),
        "a call went through before the decision"
    );
    answer
        .send(zmtp_rpc::AuthDecision::allow_as("alice"))
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap().as_deref(), Some("alice"));

    // Bob is refused with the authenticator's reason, which his calls name.
    let b = CalcClient::new(client(&bob).await);
    let refusing = tokio::spawn(async move {
        loop {
            let (req, answer) = next_asked(&mut asked).await;
            let decision = if req.public_key == Some(bob.public()) {
                zmtp_rpc::AuthDecision::deny("key revoked")
            } else {
                // Carol's decision never comes: dropped only when the test ends.
                std::mem::forget(answer);
                continue;
            };
            let _ = answer.send(decision);
        }
    });
    let text = refused(&b, "key revoked").await;
    assert!(text.contains(&ep), "{text}");
    // Carol waits on an authenticator that never answers: refused at its bound.
    let c = CalcClient::new(client(&carol).await);
    refused(&c, "authentication timed out").await;
    refusing.abort();
    assert_eq!(server.stats().requests, 1, "only alice's call ran");
}

#[tokio::test]
async fn an_async_authenticator_decides_on_plain_users_and_libzmq_clients() {
    // PLAIN: the authenticator sees the password and renames the user.
    let (server, ep, mut asked) = asking_server(None).await;
    let decide = tokio::spawn(async move {
        while let Some((req, answer)) = asked.recv().await {
            let ok = req.username.as_deref() == Some("ann")
                && req.password.as_deref() == Some(&b"secret"[..]);
            let _ = answer.send(match ok {
                true => zmtp_rpc::AuthDecision::allow_as("ann@corp"),
                false => zmtp_rpc::AuthDecision::deny("wrong password"),
            });
        }
    });
    let ann = Client::builder()
        .endpoint(&ep)
        .plain("ann", "secret")
        .connect()
        .await
        .unwrap();
    let name = UserClient::new(ann).name().await.unwrap();
    assert_eq!(name.as_deref(), Some("ann@corp"));
    // A libzmq PLAIN client, let in and refused by the same authenticator.
    libzmq_plain_clients(&ep).await;
    assert_eq!(server.stats().requests, 2);
    decide.abort();
}
