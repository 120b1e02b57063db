//! `freshgate send`: post events from a file to a running gateway in batches, with a progress
//! bar on stderr, retrying 429/503/5xx and connection errors, and a summary at the end.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::value::RawValue;

/// `freshgate send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// File of events: a JSON array, NDJSON (one event per line) or a Segment batch body
    /// (`{"batch": [...]}`); `-` reads stdin.
    pub file: PathBuf,
    /// Base URL of the gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "FRESHGATE_URL")]
    pub url: String,
    /// Write key of the source to send as.
    #[arg(long, env = "FRESHGATE_WRITE_KEY")]
    pub write_key: String,
    /// Events per request (at most 2,500; requests are also kept under 500 KiB).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Attempts per request before giving up on it.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: u32,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What `send` did.
#[derive(Debug, Default, Serialize)]
pub struct SendSummary {
    /// Events read from the file.
    pub events: usize,
    /// Events in requests that were acknowledged (200).
    pub acknowledged: usize,
    /// Events in requests that failed for good.
    pub failed: usize,
    /// Requests made, retries included.
    pub requests: usize,
    /// Retries after 429/5xx/connection errors.
    pub retries: usize,
    /// Error messages of failed requests.
    pub errors: Vec<String>,
}

/// Largest request body we build (Segment's limit is 500 KiB; clients stay a little below).
const MAX_BODY: usize = 480 * 1024;

/// Split a file's text into raw events.
///
/// # Errors
/// When the text is neither a JSON array, a batch body, nor NDJSON.
pub fn split_events(text: &str) -> anyhow::Result<Vec<Box<RawValue>>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str::<Vec<Box<RawValue>>>(trimmed).context("invalid JSON array");
    }
    if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Batch {
            batch: Vec<Box<RawValue>>,
        }
        if let Ok(b) = serde_json::from_str::<Batch>(trimmed) {
            return Ok(b.batch);
        }
    }
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Box<RawValue> = serde_json::from_str(line)
            .with_context(|| format!("line {}: not a JSON object", n + 1))?;
        events.push(v);
    }
    Ok(events)
}

/// Group events into request bodies under both limits.
#[must_use]
pub fn batches(events: &[Box<RawValue>], batch_size: usize) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut size = 0;
    let flush = |current: &mut Vec<&str>, out: &mut Vec<(usize, String)>| {
        if !current.is_empty() {
            out.push((
                current.len(),
                format!("{{\"batch\":[{}]}}", current.join(",")),
            ));
            current.clear();
        }
    };
    for e in events {
        let s = e.get();
        if current.len() >= batch_size.clamp(1, 2500) || size + s.len() + 16 > MAX_BODY {
            flush(&mut current, &mut out);
            size = 0;
        }
        size += s.len() + 1;
        current.push(s);
    }
    flush(&mut current, &mut out);
    out
}

/// Run `send`.
///
/// # Errors
/// When the file cannot be read or parsed; delivery failures are in the summary (exit code 1).
pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let events = split_events(&text)?;
    let bodies = batches(&events, args.batch_size);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/v1/batch", args.url.trim_end_matches('/'));
    let bar = ProgressBar::new(events.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} events {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = SendSummary {
        events: events.len(),
        ..SendSummary::default()
    };
    for (count, body) in bodies {
        let mut attempt = 0;
        loop {
            attempt += 1;
            summary.requests += 1;
            let response = client
                .post(&url)
                .basic_auth(&args.write_key, Some(""))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let (retry, wait, error) = match response {
                Ok(r) if r.status().is_success() => {
                    summary.acknowledged += count;
                    break;
                }
                Ok(r) => {
                    let status = r.status();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let text = r.text().await.unwrap_or_default();
                    let retry = status.as_u16() == 429 || status.is_server_error();
                    (retry, retry_after, format!("{status}: {text}"))
                }
                Err(e) => (true, None, transport_error(&e, &url)),
            };
            if !retry || attempt >= args.max_attempts {
                summary.failed += count;
                summary.errors.push(error);
                break;
            }
            summary.retries += 1;
            bar.set_message(format!("retrying: {error}"));
            let backoff = wait.map_or_else(
                || Duration::from_millis(200 * 2u64.pow(attempt.min(6))),
                Duration::from_secs,
            );
            tokio::time::sleep(backoff.min(Duration::from_secs(60))).await;
        }
        bar.inc(count as u64);
    }
    bar.finish_and_clear();
    if args.json {
        super::print_json(&summary)?;
    } else {
        eprintln!(
            "sent {} events in {} requests: {} acknowledged, {} failed, {} retries",
            summary.events, summary.requests, summary.acknowledged, summary.failed, summary.retries
        );
        for e in &summary.errors {
            eprintln!("  error: {e}");
        }
    }
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A failed request in words: a refused connection says so with the URL, whatever reqwest's
/// own wording ("error sending request") is.
fn transport_error(e: &reqwest::Error, url: &str) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => format!(
                    "connection refused at {url}: is `freshgate serve` running there? (pass its address with --url)"
                ),
                kind => format!("{url}: {kind}: {io}"),
            };
        }
        source = err.source();
    }
    if e.is_timeout() {
        format!("{url}: no answer in time")
    } else {
        format!("{url}: {e}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_three_formats() {
        assert_eq!(split_events("[{\"a\":1},{\"a\":2}]").unwrap().len(), 2);
        assert_eq!(split_events("{\"a\":1}\n\n{\"a\":2}\n").unwrap().len(), 2);
        assert_eq!(
            split_events("{\"batch\":[{\"a\":1}],\"writeKey\":\"k\"}")
                .unwrap()
                .len(),
            1
        );
        assert!(split_events("{\"a\":1}\nnot json").is_err());
    }

    #[test]
    fn batches_respect_count_and_size() {
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(100_000));
        let mut events = Vec::new();
        for _ in 0..12 {
            events.push(serde_json::from_str::<Box<RawValue>>(&big).unwrap());
        }
        let b = batches(&events, 100);
        assert!(b.iter().all(|(_, body)| body.len() <= MAX_BODY));
        assert_eq!(b.iter().map(|(n, _)| n).sum::<usize>(), 12);
        let small: Vec<Box<RawValue>> = (0..250)
            .map(|_| serde_json::from_str("{}").unwrap())
            .collect();
        assert_eq!(batches(&small, 100).len(), 3);
    }
}
