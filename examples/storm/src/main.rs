//! `orders-storm`: a retry storm against one or more orders instances. See `--help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use orders_storm::{Storm, fresh_api_key, run, svg_chart};

/// Sends KEYS idempotency keys COPIES times each, at once, from CLIENTS concurrent clients,
/// retrying on timeouts, 5xx, 409 and 429 (Retry-After and jitter), then lists the orders
/// and reports duplicates, statuses and latency.
#[derive(Debug, Parser)]
#[command(name = "orders-storm", version, about)]
struct Args {
    /// A service base URL; repeat it to spread the storm over several instances.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    urls: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Idempotency keys, one order each.
    #[arg(long, default_value_t = 200)]
    keys: usize,
    /// Times each key is sent, at once.
    #[arg(long, default_value_t = 3)]
    copies: usize,
    /// Per-attempt timeout in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
    /// Attempts per send, the first included.
    #[arg(long, default_value_t = 10)]
    max_attempts: u32,
    /// The API key; a fresh one by default, so the count of orders is this storm's alone.
    #[arg(long)]
    api_key: Option<String>,
    /// Writes the Markdown report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Writes the SVG chart here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// The report's and chart's title.
    #[arg(long, default_value = "Retry storm")]
    title: String,
    /// A line under the title saying how the service was run.
    #[arg(long, default_value = "")]
    about: String,
    /// Exits 1 when any order is duplicated or missing, or any 5xx or bad 429 was seen.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let command = std::env::args()
        .map(|arg| {
            if arg.contains(' ') {
                format!("'{arg}'")
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let storm = Storm {
        urls: args
            .urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect(),
        clients: args.clients,
        keys: args.keys,
        copies: args.copies,
        api_key: args.api_key.clone().unwrap_or_else(fresh_api_key),
        timeout: Duration::from_millis(args.timeout_ms),
        max_attempts: args.max_attempts,
    };
    let report = match run(storm).await {
        Ok(report) => report,
        Err(error) => {
            #[allow(clippy::print_stderr)] // A CLI's error goes to stderr.
            {
                eprintln!("orders-storm: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let mut markdown = report.markdown(&args.title, &command);
    if !args.about.is_empty() {
        let title_end = markdown.find('\n').unwrap_or(0);
        markdown.insert_str(title_end + 1, &format!("\n{}\n", args.about));
    }
    #[allow(clippy::print_stdout)] // The report is the program's output.
    {
        println!("{markdown}");
    }
    let written = args
        .report
        .as_ref()
        .map(|path| std::fs::write(path, &markdown))
        .transpose()
        .and_then(|_| {
            args.chart
                .as_ref()
                .map(|path| std::fs::write(path, svg_chart(&args.title, &report.attempts)))
                .transpose()
        });
    if let Err(error) = written {
        #[allow(clippy::print_stderr)] // A CLI's error goes to stderr.
        {
            eprintln!("orders-storm: cannot write the report: {error}");
        }
        return ExitCode::FAILURE;
    }
    let clean = report.duplicates == 0
        && report.missing == 0
        && report.replay_mismatches == 0
        && report.server_errors() == 0
        && report.too_many_without_retry_after == 0
        && report.too_many_without_problem == 0;
    if args.check && !clean {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
