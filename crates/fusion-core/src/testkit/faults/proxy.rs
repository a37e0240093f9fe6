//! A TCP proxy that loses replies: it forwards bytes between clients and one upstream
//! server, and on request lets a request through, waits for the server's answer, then
//! drops the answer and closes the connection ([`FaultProxy`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{Dice, ReplyFault};

/// How much one read moves at most, each way.
const CHUNK: usize = 64 * 1024;

/// A TCP proxy on `127.0.0.1` in front of one server, cutting connections on request
/// after the server answered. Dropping it closes its port and every connection through it.
///
/// The proxy sees bytes, not commands, so a fault is aimed at the chunk of bytes (one
/// read from the client) that contains a marker, such as a session id, which appears in
/// Redis' `EVALSHA` keys and in PostgreSQL's `Bind` message (TLS hides it: connect
/// without). What that means:
/// - the cut comes after the *first* bytes the server sends once the marked chunk was
///   forwarded: a request is fully sent before anything is cut, and the server answered
///   (so it processed the request) unless those bytes answer an earlier request still in
///   flight on the same connection. Clients that pipeline requests on one connection may
///   therefore see a request cut before the server ran it; the tests send one at a time;
/// - a reply that arrives in several reads is dropped whole: the first read decides, and
///   the rest goes with the connection;
/// - a marker split between two reads of the client's bytes is not seen, and bytes the
///   server sends unprompted (a notice) right after a marked chunk trigger the cut early.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    /// The server new connections go to, as `host:port` ([`FaultProxy::redirect`]).
    upstream: Mutex<String>,
    plan: Mutex<Plan>,
    cuts: AtomicUsize,
}

/// Which chunks of client bytes get their connection cut after the reply.
#[derive(Debug, Default)]
struct Plan {
    /// The one-shot fault: the next chunk containing this marker.
    next: Option<Vec<u8>>,
    /// The random faults: each chunk (containing the marker, when there is one) with the
    /// dice's probability.
    random: Option<(Option<Vec<u8>>, Dice)>,
}

impl Plan {
    /// Whether the connection that carries `chunk` is cut after the reply to it.
    fn cuts(&mut self, chunk: &[u8]) -> bool {
        if self.next.as_deref().is_some_and(|m| contains(chunk, m)) {
            self.next = None;
            return true;
        }
        match &mut self.random {
            Some((marker, dice)) if marker.as_deref().is_none_or(|m| contains(chunk, m)) => {
                dice.roll()
            }
            _ => false,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl FaultProxy {
    /// Listens on a free port of `127.0.0.1` and forwards every connection to `upstream`
    /// (`host:port`), cutting nothing until told to. A connection to the proxy whose
    /// server cannot be reached is closed at once.
    ///
    /// Panics if no port can be bound: this is test equipment.
    pub async fn start(upstream: impl Into<String>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream.into()),
            plan: Mutex::new(Plan::default()),
            cuts: AtomicUsize::new(0),
        });
        let accepting = tokio::spawn(accept(listener, Arc::clone(&shared)));
        FaultProxy {
            addr,
            shared,
            accepting,
        }
    }

    /// A proxy in front of the server a URL names (`scheme://[user@]host[:port][/...]`,
    /// `default_port` when it names none), and that URL with the proxy's address in the
    /// server's place. Panics on a URL without a host (a Unix socket); a URL naming
    /// several hosts is not supported.
    pub async fn start_for_url(url: &str, default_port: u16) -> (FaultProxy, String) {
        let (upstream, _) = reroute(url, "", default_port)
            .unwrap_or_else(|| panic!("the fault proxy needs a URL with a host, not {url}"));
        let proxy = FaultProxy::start(upstream).await;
        let (_, through) =
            reroute(url, &proxy.addr().to_string(), default_port).expect("checked above");
        (proxy, through)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Arms a one-shot fault: the next chunk of client bytes containing `marker` is
    /// forwarded, and when the server's reply comes, it is dropped and the connection
    /// closed on both sides.
    pub fn cut_after_reply_to(&self, marker: impl AsRef<[u8]>) {
        self.plan().next = Some(marker.as_ref().to_vec());
    }

    /// From now on, cuts the connection after the reply to each chunk of client bytes
    /// with `probability`, drawn from a generator seeded with `seed` (shared by every
    /// connection: the sequence of throws is the seed's, which connection gets which
    /// throw is the scheduler's). 0 stops it.
    pub fn cut_randomly(&self, probability: f64, seed: u64) {
        self.set_random(None, probability, seed);
    }

    /// [`cut_randomly`](Self::cut_randomly), only for chunks containing `marker`: the
    /// requests about one session, not the handshakes of new connections.
    pub fn cut_randomly_containing(&self, marker: impl AsRef<[u8]>, probability: f64, seed: u64) {
        self.set_random(Some(marker.as_ref().to_vec()), probability, seed);
    }

    /// Where new connections go (`host:port`): the server it was started in front of, or
    /// the last [`redirect`](Self::redirect).
    pub fn upstream(&self) -> String {
        self.shared
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends the connections made from now on to `upstream` (`host:port`), leaving those
    /// open where they are: what a name that follows a failover to the new primary does.
    pub fn redirect(&self, upstream: impl Into<String>) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = upstream.into();
    }

    /// Disarms every fault; connections already marked for a cut are still cut.
    pub fn stop_cutting(&self) {
        *self.plan() = Plan::default();
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    fn set_random(&self, marker: Option<Vec<u8>>, probability: f64, seed: u64) {
        let dice = (probability > 0.0).then(|| (marker, Dice::new(probability, seed)));
        self.plan().random = dice;
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.shared
            .plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accepting task owns the connections' tasks: aborting it drops them all.
        self.accepting.abort();
    }
}

impl ReplyFault for FaultProxy {
    /// Cuts after the reply to the next request naming `session_id`, which must not be
    /// part of another session's id or of the key prefix.
    fn lose_next_reply(&self, session_id: &str) {
        self.cut_after_reply_to(session_id);
    }

    fn lose_replies_at_random(&self, session_id: &str, probability: f64, seed: u64) {
        self.cut_randomly_containing(session_id, probability, seed);
    }

    fn replies_lost(&self) -> usize {
        self.cuts()
    }
}

/// `url` with its `host[:port]` replaced by `replacement`, and the `host:port` it named.
fn reroute(url: &str, replacement: &str, default_port: u16) -> Option<(String, String)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host_start = rest[..end].rfind('@').map_or(0, |at| at + 1);
    let host_port = &rest[host_start..end];
    if host_port.is_empty() {
        return None;
    }
    // `[::1]:5432`: the port is after the bracket, if anywhere.
    let after_host = host_port
        .rfind(']')
        .map_or(host_port, |close| &host_port[close..]);
    let upstream = if after_host.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let through = format!(
        "{}{replacement}{}",
        &url[..start + host_start],
        &rest[end..]
    );
    Some((upstream, through))
}

/// Accepts clients until the proxy is dropped, each relayed by a task of its own.
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(relay(client, Arc::clone(&shared)));
    }
}

/// Relays one client's connection until either side closes it or a fault cuts it.
async fn relay(mut client: TcpStream, shared: Arc<Shared>) {
    let upstream = shared
        .upstream
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    // Both directions run in this one task, so a chunk is fully forwarded and marked
    // before the other direction can read a byte of its reply.
    let cut_at_next_reply = AtomicBool::new(false);
    let requests = async {
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let cut = shared
                .plan
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .cuts(chunk);
            if to_server.write_all(chunk).await.is_err() {
                return;
            }
            if cut {
                cut_at_next_reply.store(true, Ordering::SeqCst);
            }
        }
        // The client is done sending: pass that on, and keep relaying the replies.
        let _ = to_server.shutdown().await;
        std::future::pending::<()>().await;
    };
    let replies = async {
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cut_at_next_reply.load(Ordering::SeqCst) {
                shared.cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever ends first ends the connection: both sockets close when this returns.
    tokio::select! {
        () = requests => {}
        () = replies => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A server that echoes each chunk it reads and reports it on the channel.
    async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received, chunks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let received = received.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; CHUNK];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        let _ = received.send(buf[..n].to_vec());
                        if conn.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, chunks)
    }

    /// Sends `request` and returns the echo, or `None` if the connection closed first.
    async fn ask(conn: &mut TcpStream, request: &[u8]) -> Option<Vec<u8>> {
        conn.write_all(request).await.ok()?;
        let mut echo = vec![0; request.len()];
        conn.read_exact(&mut echo).await.ok()?;
        Some(echo)
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        TcpStream::connect(proxy.addr()).await.unwrap()
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_unchanged() {
        let (server, _) = echo_server().await;
        let proxy = FaultProxy::start(server.to_string()).await;
        let mut conn = connect(&proxy).await;
        assert_eq!(ask(&mut conn, b"PING").await.unwrap(), b"PING");
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut reader, mut writer) = conn.into_split();
        let sent = large.clone();
        let sending = tokio::spawn(async move { writer.write_all(&sent).await.unwrap() });
        let mut echoed = vec![0; large.len()];
        reader.read_exact(&mut echoed).await.unwrap();
        sending.await.unwrap();
        assert!(echoed == large, "a large exchange arrives intact");
        assert_eq!(proxy.cuts(), 0);
    }

    #[tokio::test]
    async fn a_marked_request_reaches_the_server_and_its_reply_is_lost_with_the_connection() {
        let (server, mut received) = echo_server().await;
        let proxy = FaultProxy::start(server.to_string()).await;
        proxy.cut_after_reply_to("session-7");
        let mut conn = connect(&proxy).await;
        assert_eq!(
            ask(&mut conn, b"GET session-1").await.unwrap(),
            b"GET session-1"
        );
        assert_eq!(ask(&mut conn, b"SET session-7 x").await, None, "reply lost");
        assert_eq!(received.recv().await.unwrap(), b"GET session-1");
        assert_eq!(
            received.recv().await.unwrap(),
            b"SET session-7 x",
            "server got it"
        );
        assert_eq!(proxy.cuts(), 1);

        let mut again = connect(&proxy).await;
        let request = b"SET session-7 y";
        assert_eq!(ask(&mut again, request).await.unwrap(), request, "one-shot");
        assert_eq!(proxy.cuts(), 1);
    }

    #[tokio::test]
    async fn random_cuts_hit_the_chunks_they_aim_at() {
        let (server, _) = echo_server().await;
        let proxy = FaultProxy::start(server.to_string()).await;
        proxy.cut_randomly(1.0, 3);
        assert_eq!(ask(&mut connect(&proxy).await, b"a").await, None);
        proxy.cut_randomly_containing("s1", 1.0, 3);
        let mut conn = connect(&proxy).await;
        assert_eq!(ask(&mut conn, b"HELLO").await.unwrap(), b"HELLO");
        assert_eq!(ask(&mut conn, b"GET s1").await, None);
        assert_eq!(proxy.cuts(), 2);
        proxy.stop_cutting();
        assert_eq!(
            ask(&mut connect(&proxy).await, b"GET s1").await.unwrap(),
            b"GET s1"
        );

        proxy.cut_randomly(0.5, 11);
        let mut survived = 0;
        for _ in 0..40 {
            survived += usize::from(ask(&mut connect(&proxy).await, b"x").await.is_some());
        }
        assert_eq!(
            proxy.cuts(),
            2 + 40 - survived,
            "each chunk cut or answered"
        );
        assert!((5..35).contains(&survived), "{survived} of 40 at 1/2");
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let (server, _) = echo_server().await;
        let proxy = FaultProxy::start(server.to_string()).await;
        let mut conn = connect(&proxy).await;
        assert!(ask(&mut conn, b"x").await.is_some());
        drop(proxy);
        let mut buf = [0; 1];
        assert!(!matches!(conn.read(&mut buf).await, Ok(1..)));
    }

    #[test]
    fn urls_are_rerouted_through_the_proxy() {
        let through = |url| reroute(url, "127.0.0.1:9", 6379).unwrap();
        assert_eq!(
            through("redis://127.0.0.1:6379"),
            ("127.0.0.1:6379".into(), "redis://127.0.0.1:9".into())
        );
        assert_eq!(
            through("redis://:pw@cache/0"),
            ("cache:6379".into(), "redis://:pw@127.0.0.1:9/0".into())
        );
        assert_eq!(
            through("postgres://postgres@[::1]:5432/test?sslmode=disable"),
            (
                "[::1]:5432".into(),
                "postgres://postgres@127.0.0.1:9/test?sslmode=disable".into()
            )
        );
        assert_eq!(reroute("postgres:///test", "x", 5432), None);
    }
}
