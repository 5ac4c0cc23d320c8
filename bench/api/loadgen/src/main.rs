//! Load generator of `bench/api/run.sh`.
//!
//! - `closed`: N concurrent clients each sending the next request as soon as the previous
//!   answered, for a duration: throughput and latency percentiles.
//! - `open`: requests scheduled at a fixed rate regardless of answers (no coordinated omission:
//!   latency counts from the scheduled send time): percentiles at that rate.
//!
//! Prints one JSON line: `{"mode","rate","concurrency","requests","errors","rps","p50_ms","p99_ms"}`.

use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// closed or open.
    mode: String,
    /// Full URL.
    url: String,
    /// GET or POST (POST sends {"name": "<prefix>-<n>"}).
    #[arg(long, default_value = "GET")]
    method: String,
    /// Bearer token.
    #[arg(long)]
    token: Option<String>,
    /// Concurrency of the closed loop.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests per second of the open loop.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Name prefix of created resources (POST).
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Stop after this many requests (0 = no limit).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
}

struct Shared {
    args: Args,
    client: reqwest::Client,
    counter: AtomicU64,
    errors: AtomicU64,
}

async fn one(s: &Shared) -> bool {
    let mut req = match s.args.method.as_str() {
        "POST" => {
            let n = s.counter.fetch_add(1, Ordering::Relaxed);
            s.client
                .post(&s.args.url)
                .header("content-type", "application/json")
                .body(format!(r#"{{"name":"{}-{n}"}}"#, s.args.prefix))
        }
        _ => s.client.get(&s.args.url),
    };
    if let Some(t) = &s.args.token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let shared = Arc::new(Shared { args: args.clone(), client, counter: AtomicU64::new(0), errors: AtomicU64::new(0) });
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let mut latencies: Vec<f64> = Vec::new();
    match args.mode.as_str() {
        "closed" => {
            let mut tasks = Vec::new();
            for _ in 0..args.concurrency {
                let s = Arc::clone(&shared);
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while start.elapsed() < duration {
                        if s.args.max_requests > 0 && s.counter.load(Ordering::Relaxed) >= s.args.max_requests {
                            break;
                        }
                        let t = Instant::now();
                        if !one(&s).await {
                            s.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    lat
                }));
            }
            for t in tasks {
                latencies.extend(t.await.unwrap_or_default());
            }
        }
        "open" => {
            let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
            let total = (args.rate as f64 * args.duration) as u64;
            let mut tasks = Vec::with_capacity(total as usize);
            for i in 0..total {
                let scheduled = start + interval * (i as u32);
                tokio::time::sleep_until(scheduled.into()).await;
                let s = Arc::clone(&shared);
                tasks.push(tokio::spawn(async move {
                    if !one(&s).await {
                        s.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    scheduled.elapsed().as_secs_f64() * 1000.0
                }));
            }
            for t in tasks {
                if let Ok(l) = t.await {
                    latencies.push(l);
                }
            }
        }
        other => {
            eprintln!("unknown mode {other}; use closed or open");
            std::process::exit(2);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let out = serde_json::json!({
        "mode": args.mode,
        "rate": if args.mode == "open" { Some(args.rate) } else { None },
        "concurrency": if args.mode == "closed" { Some(args.concurrency) } else { None },
        "requests": latencies.len(),
        "errors": shared.errors.load(Ordering::Relaxed),
        "rps": latencies.len() as f64 / elapsed,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
    });
    println!("{out}");
}
