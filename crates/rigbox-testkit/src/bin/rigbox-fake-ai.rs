//! `rigbox-fake-ai`: the fake upstream AI provider ([`rigbox_testkit::fake_ai`]) as a process,
//! for benchmarks.
//!
//! ```text
//! rigbox-fake-ai [--listen 127.0.0.1:0] [--scenario SPEC] [--record]
//! ```
//!
//! Prints `KEY=value` lines on stdout once it listens (`FAKE_AI_ADDR`, `FAKE_AI_OPENROUTER_URL`,
//! `FAKE_AI_ANTHROPIC_URL`, `FAKE_AI_BRAVE_URL`), then serves until SIGINT or SIGTERM. Recording
//! is off unless `--record` (nobody reads it in a separate process; it only costs memory).

use rigbox_testkit::fake_ai::{FakeAi, FakeConfig};
use std::io::Write;

// The fake shares the benchmark's cores with what it measures; glibc's allocator took a fifth of
// its CPU (every request builds and drops a JSON tree), mimalloc half as much.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: rigbox-fake-ai [--listen ADDR] [--scenario SPEC] [--record]";

// One thread: the fake shares the benchmark's cores with the proxy it serves, and a second
// worker only adds cross-thread wake-ups and work stealing to its cost per request.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut config = FakeConfig {
        record: false,
        ..FakeConfig::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?,
            "--scenario" => {
                config.default_scenario = args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?
            }
            "--record" => config.record = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let fake = FakeAi::start_on(listener, config);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "FAKE_AI_ADDR={}", fake.addr())?;
        writeln!(out, "FAKE_AI_OPENROUTER_URL={}", fake.openrouter_url())?;
        writeln!(out, "FAKE_AI_ANTHROPIC_URL={}", fake.anthropic_url())?;
        writeln!(out, "FAKE_AI_BRAVE_URL={}", fake.brave_url())?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(fake);
    Ok(())
}
