//! `rigbox-ai-loadgen`: the load generator of `bench/ai-proxy/run.sh`.
//!
//! ```text
//! rigbox-ai-loadgen latency    --url URL --body JSON [--n 2000] [--warmup 100]
//! rigbox-ai-loadgen ttfb       --url URL --body JSON [--n 2000] [--warmup 100]
//! rigbox-ai-loadgen throughput --url URL --body JSON [--conns 32] [--secs 5] [--warmup-secs 1]
//!   common: [--local 127.16.0.2] [--header 'name: value']... [--expect TEXT] [--threads 1]
//! ```
//!
//! Every request is a `POST` of the same body over HTTP/1.1 keep-alive connections bound to
//! `--local` (the AI proxy on a simulated node identifies the calling workspace by that source
//! address, which wrk cannot set). Each connection carries one request at a time.
//!
//! - `latency`: one connection, `n` sequential requests; the time from sending a request to the
//!   end of its response body.
//! - `ttfb`: the same, but the time to the first non-empty body frame (for a stream: its first
//!   SSE event); the rest of the body is read before the next request, and the time to its end
//!   is reported as `end_p50_us` / `end_p99_us`.
//! - `throughput`: `conns` connections in a closed loop for `warmup_secs` (not counted) then
//!   `secs`; completed requests per second, and their latency. Its connections are a minimal
//!   HTTP/1.1 client of its own ([`RawConn`], like wrk's: the load generator shares the cores
//!   with what it measures), the sequential modes' hyper's.
//!
//! A request counts as an error when its status is not 2xx, its connection fails, or its body
//! lacks `--expect`. A broken connection is replaced. Prints one JSON object on stdout, times
//! in microseconds; `cpu_ns` is the CPU time the generator itself used.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;

#[derive(Parser)]
#[command(about = "Load generator of bench/ai-proxy (JSON on stdout, times in µs)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// What the sequential modes take.
#[derive(Args)]
struct Sequential {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 2000)]
    n: usize,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
}

#[derive(Subcommand)]
enum Mode {
    /// Sequential requests over one connection: time to the end of the response.
    Latency(Sequential),
    /// Sequential requests over one connection: time to the first body bytes.
    Ttfb(Sequential),
    /// `conns` connections in a closed loop for a fixed time: completed requests per second.
    Throughput {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 32)]
        conns: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
    },
}

#[derive(Args, Clone)]
struct Target {
    /// `http://host:port/path` (plain HTTP only).
    #[arg(long)]
    url: Uri,
    /// The JSON body of every request (`@FILE` reads it from a file).
    #[arg(long)]
    body: String,
    /// Source address of every connection.
    #[arg(long)]
    local: Option<IpAddr>,
    /// Extra request header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Every response body must contain this text.
    #[arg(long)]
    expect: Option<String>,
    /// Runtime threads of the generator (1: everything on one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// What every request is made of, resolved once.
struct Plan {
    addr: SocketAddr,
    local: Option<IpAddr>,
    path: String,
    host: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    expect: Option<Vec<u8>>,
}

impl Plan {
    async fn new(t: &Target) -> anyhow::Result<Self> {
        if t.url.scheme_str() != Some("http") {
            bail!("only http:// URLs are supported: {}", t.url);
        }
        let auth = t.url.authority().context("the URL has no host")?;
        let port = auth.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((auth.host(), port))
            .await?
            .next()
            .with_context(|| format!("cannot resolve {}", auth.host()))?;
        let path = t
            .url
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let mut headers = Vec::new();
        for h in &t.headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("a header is `name: value`, not {h:?}"))?;
            headers.push((
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            ));
        }
        let body = match t.body.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("read {file}"))?,
            None => t.body.clone().into_bytes(),
        };
        Ok(Plan {
            addr,
            local: t.local,
            path,
            host: HeaderValue::from_str(auth.as_str())?,
            headers,
            body: Bytes::from(body),
            expect: t.expect.clone().map(String::into_bytes),
        })
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json");
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        Ok(b.body(Full::new(self.body.clone()))?)
    }

    /// The request as bytes on the wire (HTTP/1.1, keep-alive), for [`RawConn`].
    fn wire(&self) -> Arc<[u8]> {
        let mut w = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.path,
            self.host.to_str().unwrap_or(""),
            self.body.len()
        )
        .into_bytes();
        for (n, v) in &self.headers {
            w.extend_from_slice(n.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(v.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"\r\n");
        w.extend_from_slice(&self.body);
        w.into()
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = self.connect_tcp().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn connect_tcp(&self) -> anyhow::Result<tokio::net::TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = self.local {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind {ip}"))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// One connection of the throughput mode: a plain HTTP/1.1 keep-alive client over a socket, as
/// lean as `wrk`'s (the request's bytes built once, the response read by its length), so that
/// the generator takes as little as it can of the cores it shares with what it measures.
/// Replaced when it breaks.
struct RawConn {
    plan: Arc<Plan>,
    request: Arc<[u8]>,
    stream: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
    reconnects: u64,
}

impl RawConn {
    fn new(plan: Arc<Plan>, request: Arc<[u8]>) -> Self {
        RawConn {
            plan,
            request,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            reconnects: 0,
        }
    }

    /// Sends the request and reads its whole response; the time to its end.
    async fn request(&mut self) -> anyhow::Result<Duration> {
        if self.stream.is_none() {
            self.stream = Some(self.plan.connect_tcp().await?);
        }
        let start = Instant::now();
        let r = self.exchange().await;
        if r.is_err() {
            self.stream = None;
            self.reconnects += 1;
        }
        r.map(|()| start.elapsed())
    }

    async fn exchange(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let stream = self.stream.as_mut().context("no connection")?;
        stream.write_all(&self.request).await?;
        self.buf.clear();
        // The head.
        let (status, head_len, length, close) = loop {
            read_more(stream, &mut self.buf).await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf)? {
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                let length = match header("content-length") {
                    Some(v) => Some(std::str::from_utf8(v)?.trim().parse::<usize>()?),
                    None if header("transfer-encoding")
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) =>
                    {
                        None
                    }
                    None => bail!("a response with neither Content-Length nor chunked encoding"),
                };
                let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
                break (resp.code.unwrap_or(0), n, length, close);
            }
        };
        // The body.
        let body = match length {
            Some(len) => {
                while self.buf.len() < head_len + len {
                    read_more(stream, &mut self.buf).await?;
                }
                self.buf[head_len..head_len + len].to_vec()
            }
            None => read_chunked(stream, &mut self.buf, head_len).await?,
        };
        if close {
            self.stream = None;
        }
        if !(200..300).contains(&status) {
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        if let Some(e) = &self.plan.expect {
            if !body.windows(e.len()).any(|w| w == e.as_slice()) {
                bail!(
                    "the body lacks the expected text: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            }
        }
        Ok(())
    }
}

/// Reads what the socket has into `buf`; an error at the end of the stream.
async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    if stream.read_buf(buf).await? == 0 {
        bail!("the connection closed mid-response");
    }
    Ok(())
}

/// A chunked body starting at `at` in `buf`, read to its last chunk; returns it decoded.
async fn read_chunked(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    mut at: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("a bad chunk size {size_text:?}"))?;
        let data = line_end + 2;
        // The chunk and its CRLF (the last chunk: an empty trailer's CRLF).
        while buf.len() < data + size + 2 {
            read_more(stream, buf).await?;
        }
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&buf[data..data + size]);
        at = data + size + 2;
    }
}

/// One connection, replaced when it breaks.
struct Conn {
    plan: Arc<Plan>,
    sender: Option<SendRequest<Full<Bytes>>>,
    reconnects: u64,
}

/// Times of one answered request.
struct Timing {
    first_byte: Duration,
    total: Duration,
}

impl Conn {
    fn new(plan: Arc<Plan>) -> Self {
        Conn {
            plan,
            sender: None,
            reconnects: 0,
        }
    }

    /// Sends one request and reads its whole body. The clock starts once a connection is
    /// ready (a reconnect is not counted).
    async fn request(&mut self) -> anyhow::Result<Timing> {
        let ready = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            if self.sender.is_some() {
                self.reconnects += 1;
            }
            self.sender = None;
            let mut s = self.plan.connect().await?;
            s.ready().await?;
            self.sender = Some(s);
        }
        let plan = self.plan.clone();
        let sender = self.sender.as_mut().context("no connection")?;
        let req = plan.request()?;
        let start = Instant::now();
        let result = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut first_byte = None;
            let mut seen = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame?.data_ref() {
                    if !data.is_empty() && first_byte.is_none() {
                        first_byte = Some(start.elapsed());
                    }
                    seen.extend_from_slice(data);
                }
            }
            let total = start.elapsed();
            if !status.is_success() {
                bail!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&seen[..seen.len().min(300)])
                );
            }
            if let Some(e) = &plan.expect {
                if !seen.windows(e.len()).any(|w| w == e.as_slice()) {
                    bail!(
                        "the body lacks the expected text: {}",
                        String::from_utf8_lossy(&seen[..seen.len().min(300)])
                    );
                }
            }
            Ok(Timing {
                first_byte: first_byte.unwrap_or(total),
                total,
            })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// Nearest-rank percentile of sorted microseconds.
fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut us: Vec<u64>) -> serde_json::Value {
    us.sort_unstable();
    let mean = if us.is_empty() {
        0.0
    } else {
        us.iter().sum::<u64>() as f64 / us.len() as f64
    };
    json!({
        "p50_us": pct(&us, 0.50),
        "p90_us": pct(&us, 0.90),
        "p99_us": pct(&us, 0.99),
        "max_us": us.last().copied().unwrap_or(0),
        "mean_us": mean.round(),
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Reports the first error of a run on stderr (the rest are only counted).
fn note_error(errors: &mut u64, e: &anyhow::Error) {
    if *errors == 0 {
        eprintln!("rigbox-ai-loadgen: first error: {e:#}");
    }
    *errors += 1;
}

async fn sequential(
    target: &Target,
    n: usize,
    warmup: usize,
    ttfb: bool,
) -> anyhow::Result<serde_json::Value> {
    let plan = Arc::new(Plan::new(target).await?);
    let mut conn = Conn::new(plan);
    let mut errors = 0;
    for _ in 0..warmup {
        if let Err(e) = conn.request().await {
            note_error(&mut errors, &e);
        }
    }
    let warmup_errors = errors;
    errors = 0;
    let mut times = Vec::with_capacity(n);
    let mut ends = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        match conn.request().await {
            Ok(t) => {
                times.push(micros(if ttfb { t.first_byte } else { t.total }));
                ends.push(micros(t.total));
            }
            Err(e) => note_error(&mut errors, &e),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut out = json!({
        "mode": if ttfb { "ttfb" } else { "latency" },
        "url": target.url.to_string(),
        "n": n,
        "ok": times.len(),
        "errors": errors,
        "warmup_errors": warmup_errors,
        "sent": warmup + n,
        "reconnects": conn.reconnects,
        "rps": times.len() as f64 / elapsed,
    });
    merge(&mut out, summary(times));
    if ttfb {
        // The end of each stream too (its last byte), under `end_*`.
        ends.sort_unstable();
        merge(
            &mut out,
            json!({"end_p50_us": pct(&ends, 0.50), "end_p99_us": pct(&ends, 0.99)}),
        );
    }
    Ok(out)
}

async fn throughput(
    target: &Target,
    conns: usize,
    secs: f64,
    warmup_secs: f64,
) -> anyhow::Result<serde_json::Value> {
    let valid =
        |x: f64, min_exclusive: bool| x.is_finite() && (x > 0.0 || (!min_exclusive && x == 0.0));
    if conns == 0 || !valid(secs, true) || !valid(warmup_secs, false) {
        bail!("need --conns > 0, --secs > 0 and --warmup-secs >= 0");
    }
    let plan = Arc::new(Plan::new(target).await?);
    let wire = plan.wire();
    let begin = Instant::now() + Duration::from_millis(50);
    let measure_from = begin + Duration::from_secs_f64(warmup_secs);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (plan, wire) = (plan.clone(), wire.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::new(plan, wire);
            let mut times = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut sent_all = 0u64;
            tokio::time::sleep_until(begin.into()).await;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                sent_all += 1;
                let r = conn.request().await;
                if sent < measure_from {
                    continue;
                }
                match r {
                    Ok(t) => times.push(micros(t)),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        // A refused connection must not spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (times, errors, first_error, conn.reconnects, sent_all)
        }));
    }
    let mut times = Vec::new();
    let mut errors = 0;
    let mut reconnects = 0;
    let mut sent = 0;
    let mut reported = false;
    for t in tasks {
        let (ts, e, first, r, s) = t.await?;
        times.extend(ts);
        errors += e;
        reconnects += r;
        sent += s;
        if let (Some(first), false) = (first, reported) {
            eprintln!("rigbox-ai-loadgen: first error: {first:#}");
            reported = true;
        }
    }
    let mut out = json!({
        "mode": "throughput",
        "url": target.url.to_string(),
        "conns": conns,
        "secs": secs,
        "ok": times.len(),
        "errors": errors,
        "sent": sent,
        "reconnects": reconnects,
        "rps": times.len() as f64 / secs,
    });
    merge(&mut out, summary(times));
    Ok(out)
}

/// CPU time this process has used, in nanoseconds: the sum over its threads of
/// `/proc/self/task/*/schedstat`'s first field (0 where that is unreadable).
fn own_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.mode {
        Mode::Latency(Sequential { target, .. })
        | Mode::Ttfb(Sequential { target, .. })
        | Mode::Throughput { target, .. } => target.threads,
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let cpu_before = own_cpu_ns();
    let mut out = rt.block_on(async {
        match &cli.mode {
            Mode::Latency(Sequential { target, n, warmup }) => {
                sequential(target, *n, *warmup, false).await
            }
            Mode::Ttfb(Sequential { target, n, warmup }) => {
                sequential(target, *n, *warmup, true).await
            }
            Mode::Throughput {
                target,
                conns,
                secs,
                warmup_secs,
            } => throughput(target, *conns, *secs, *warmup_secs).await,
        }
    })?;
    // Its own CPU time, for the share of the cores it takes from what it measures.
    merge(
        &mut out,
        json!({"cpu_ns": own_cpu_ns().saturating_sub(cpu_before)}),
    );
    println!("{out}");
    Ok(())
}
