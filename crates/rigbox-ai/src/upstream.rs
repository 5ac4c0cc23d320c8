//! The proxy's HTTP client to its upstreams: HTTP/1.1 keep-alive connections (over rustls with
//! Mozilla's roots for `https`), each driven by the task of the request using it.
//!
//! It is on every proxied request's path, so it is hyper's connection API with a pool of its
//! own rather than a pooled client: a request checks a connection out, sends, and polls the
//! connection itself while it waits for the answer and reads its body; the connection goes
//! back to the pool when the body has been read to its end. No connection task, no channel
//! between tasks, no pool map hashed per request (bench/ai-proxy: hyper's legacy pooled client
//! cost ~5% of rigboxd's CPU per request, reqwest 24% more again).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// A request to an upstream; bodies are always read whole before forwarding.
pub(crate) type Request = http::Request<Full<Bytes>>;
/// An upstream's answer, its body still streaming in.
pub(crate) type Response = http::Response<Body>;

/// Idle connections kept per upstream, and for how long.
const MAX_IDLE: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an upstream request failed. Its text never contains the URL (it names the operator's
/// upstream), only what went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{0}")]
    Request(String),
    #[error("{0}")]
    Body(#[from] hyper::Error),
}

impl Error {
    /// An error with its causes, which the outer texts leave out ("client error (Connect)").
    fn with_causes(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        Error::Request(text)
    }
}

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// One upstream connection: its sending half and the connection itself, which whoever uses it
/// polls. The connection (its buffers and TLS state, ~1.7 kB) is boxed: a `Conn` moves in and
/// out of the pool and through the futures of every request, and moving it whole cost rigboxd
/// ~3% of its CPU in `memmove`.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Box<http1::Connection<Io, Full<Bytes>>>,
}

impl Conn {
    /// Polls the connection; `true` once it has ended (closed, failed, or no longer usable).
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut *self.conn).poll(cx).is_ready()
    }

    /// Waits until the connection takes a request; `false` if it has ended instead.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            if self.poll_ended(cx) {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }
}

/// Where a connection goes (`https` or not, and `host:port`), and the thread that made it.
/// A connection's socket belongs to the runtime it was made in, whose I/O driver alone wakes
/// whoever waits on it: a bridge thread's runtime (one per thread) takes its own connections
/// only, so no request waits on another thread's driver.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    https: bool,
    authority: Option<http::uri::Authority>,
    thread: std::thread::ThreadId,
}

impl Key {
    fn of(uri: &http::Uri) -> Self {
        Key {
            https: uri.scheme() == Some(&http::uri::Scheme::HTTPS),
            authority: uri.authority().cloned(),
            thread: std::thread::current().id(),
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections by upstream (a proxy has at most three) and thread.
#[derive(Default)]
struct Pool(Mutex<Vec<(Key, Vec<Idle>)>>);

impl Pool {
    /// The most recently used idle connection of `key` that has not expired.
    fn take(&self, key: &Key) -> Option<Conn> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (_, idle) = all.iter_mut().find(|(k, _)| k == key)?;
        let fresh = idle.partition_point(|i| i.since.elapsed() >= IDLE_TIMEOUT);
        idle.drain(..fresh);
        idle.pop().map(|i| i.conn)
    }

    /// Closes the idle connections that expired or ended (their upstream closed them); returns
    /// how many stay.
    fn sweep(&self) -> usize {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (_, idle) in all.iter_mut() {
            idle.retain_mut(|i| i.since.elapsed() < IDLE_TIMEOUT && !i.conn.poll_ended(&mut cx));
        }
        all.iter().map(|(_, idle)| idle.len()).sum()
    }

    fn put(&self, key: Key, conn: Conn) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let idle = match all.iter().position(|(k, _)| *k == key) {
            Some(i) => &mut all[i].1,
            None => {
                all.push((key, Vec::new()));
                &mut all.last_mut().expect("just pushed").1
            }
        };
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// The proxy's upstream connections (cheap to clone: one pool).
#[derive(Clone)]
pub(crate) struct Client {
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
}

impl Client {
    pub(crate) fn new() -> Result<Self, crate::BuildError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(crate::BuildError)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client {
            connector,
            pool: Arc::default(),
        })
    }

    /// Sends `req` (its URI absolute); resolves with the answer's head. An idle connection the
    /// upstream closed before it took the request is left for the next one (or a new one).
    pub(crate) async fn send(&self, mut req: Request) -> Result<Response, Error> {
        // The connection is chosen by the absolute URI; the request line carries its path.
        let uri = std::mem::take(req.uri_mut());
        let key = Key::of(&uri);
        *req.uri_mut() = uri
            .path_and_query()
            .map_or_else(|| http::Uri::from_static("/"), |p| p.clone().into());
        loop {
            let (conn, reused) = match self.pool.take(&key) {
                Some(c) => (c, true),
                // Boxed: a connection is made rarely, and its future (a TCP connect, a TLS
                // handshake) would make every request's larger.
                None => (Box::pin(self.connect(&uri)).await?, false),
            };
            match self.send_on(conn, req, &key).await {
                Ok(resp) => return Ok(resp),
                // Not sent: the connection ended while idle.
                Err((Some(back), _)) if reused => req = back,
                Err((_, e)) => return Err(e),
            }
        }
    }

    /// Closes idle connections that expired or that their upstream closed: otherwise they are
    /// only noticed when next taken, and hold their sockets until then.
    pub(crate) fn sweep(&self) -> usize {
        self.pool.sweep()
    }

    async fn connect(&self, uri: &http::Uri) -> Result<Conn, Error> {
        let io = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(|e| Error::with_causes(&*e))?;
        let (sender, conn) = http1::handshake(io).await?;
        Ok(Conn {
            sender,
            conn: Box::new(conn),
        })
    }

    /// Sends `req` on `conn`, polling it until the answer's head arrives. On failure, the
    /// request comes back if it was not sent.
    async fn send_on(
        &self,
        mut conn: Conn,
        req: Request,
        key: &Key,
    ) -> Result<Response, (Option<Request>, Error)> {
        if !conn.ready().await {
            return Err((Some(req), Error::Request("connection closed".into())));
        }
        let mut sent = std::pin::pin!(conn.sender.try_send_request(req));
        let mut ended = false;
        let head = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = sent.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            // The connection writes the request and reads the answer; once it has ended, the
            // request fails with its reason.
            if !ended {
                ended = conn.poll_ended(cx);
            }
            sent.as_mut().poll(cx)
        })
        .await;
        match head {
            Ok(resp) => Ok(resp.map(|incoming| Body {
                incoming,
                conn: (!ended).then_some(conn),
                key: key.clone(),
                pool: self.pool.clone(),
            })),
            Err(mut e) => {
                let back = e.take_message();
                Err((back, Error::Body(e.into_error())))
            }
        }
    }
}

/// An upstream answer's body. Reading it drives its connection, which returns to the pool once
/// the body has been read to its end; a body dropped before that closes it.
pub(crate) struct Body {
    incoming: Incoming,
    conn: Option<Conn>,
    key: Key,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("incoming", &self.incoming)
            .field("pooled_when_read", &self.conn.is_some())
            .finish()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(c) = &mut this.conn {
            if c.poll_ended(cx) {
                this.conn = None;
            }
        }
        let frame = Pin::new(&mut this.incoming).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            if let Some(conn) = this.conn.take() {
                this.pool.put(this.key.clone(), conn);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The whole of an answer's body.
pub(crate) async fn read_all(body: Body) -> Result<Bytes, Error> {
    Ok(body.collect().await?.to_bytes())
}

/// The next data chunk of a streaming body (trailers skipped); `None` at its end.
pub(crate) async fn next_chunk(body: &mut Body) -> Result<Option<Bytes>, Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP/1.1 server on loopback answering every request `hello` with keep-alive, closing
    /// each connection `close_after` its first answer if given. Returns its base URL, the
    /// connections it accepted and the request lines it read.
    async fn server(
        close_after: Option<Duration>,
    ) -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let url = format!("http://{}", listener.local_addr().expect("test setup"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (a, l) = (accepted.clone(), lines.clone());
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.expect("test setup");
                a.fetch_add(1, Ordering::SeqCst);
                let l = l.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = tcp.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            l.lock()
                                .expect("lines")
                                .push(head.lines().next().unwrap_or("").to_owned());
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                            if tcp.write_all(answer).await.is_err() {
                                return;
                            }
                            if let Some(after) = close_after {
                                tokio::time::sleep(after).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted, lines)
    }

    fn get(url: &str) -> Request {
        http::Request::get(url)
            .body(Full::default())
            .expect("test setup")
    }

    /// A connection serves one request after another once each body has been read, and the
    /// request line carries the path only (origin form), not the absolute URI.
    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_was_read() {
        let (url, accepted, lines) = server(None).await;
        let client = Client::new().expect("test setup");
        for _ in 0..3 {
            let resp = client
                .send(get(&format!("{url}/v1/models?x=1")))
                .await
                .expect("answer");
            assert_eq!(read_all(resp.into_body()).await.expect("body"), "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(
            *lines.lock().expect("lines"),
            vec!["GET /v1/models?x=1 HTTP/1.1"; 3]
        );

        // A body dropped before its end closes its connection: the next request opens another.
        let resp = client.send(get(&url)).await.expect("answer");
        drop(resp);
        let resp = client.send(get(&url)).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.expect("body"), "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// An idle connection the upstream closed is not used: the request goes out on a new one.
    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_replaced() {
        let (url, accepted, lines) = server(Some(Duration::from_millis(20))).await;
        let client = Client::new().expect("test setup");
        for _ in 0..3 {
            let resp = client.send(get(&url)).await.expect("answer");
            assert_eq!(read_all(resp.into_body()).await.expect("body"), "hello");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(lines.lock().expect("lines").len(), 3);
        // The last one, closed by the upstream while idle, is closed by the sweep too.
        assert_eq!(client.sweep(), 0);
    }

    /// HTTPS upstreams go through TLS with Mozilla's roots: a certificate no public CA signed is
    /// refused before anything is sent, and the error says why without naming the URL.
    #[tokio::test]
    async fn an_upstream_whose_certificate_no_public_ca_signed_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("test setup");
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
            .expect("test setup");
        let cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("test setup");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let port = listener.local_addr().expect("test setup").port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("test setup");
            acceptor.accept(tcp).await.map(|_| ())
        });

        let req = http::Request::get(format!("https://localhost:{port}/api/v1/models"))
            .body(Full::default())
            .expect("test setup");
        let err = Client::new()
            .expect("test setup")
            .send(req)
            .await
            .expect_err("refused")
            .to_string();
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(!err.contains("/api/v1/models"), "{err}");
        // The server saw a handshake the client aborted: no request was sent.
        assert!(server.await.expect("test setup").is_err());
    }
}
