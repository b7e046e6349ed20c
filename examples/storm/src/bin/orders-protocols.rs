//! `orders-protocols`: the same reads of a running orders service over JSON on HTTP/1.1, JSON
//! on h2c and gRPC, side by side. See `--help` and `examples/orders/docs/grpc-vs-rest.sh`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use orders_storm::protocols::{
    Bench, Cell, Measured, Median, markdown, matrix, run_cell, seed, svg,
};

/// Seeds 100 orders through REST, then measures every cell of the matrix (each operation,
/// each transport, each concurrency) and prints one Markdown table.
#[derive(Debug, Parser)]
#[command(name = "orders-protocols", version, about)]
struct Args {
    /// The service's REST listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    rest: SocketAddr,
    /// The service's `--grpc-listen`.
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc: SocketAddr,
    /// An API key the service accepts.
    #[arg(long)]
    api_key: String,
    /// The server's process id, for its CPU time per request.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The warm-up before each cell's window, in milliseconds.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Each cell's measured window, in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    window_ms: u64,
    /// Requests in flight, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Connections of the multiplexed HTTP/2 rows.
    #[arg(long, default_value_t = 2)]
    multiplexed_connections: usize,
    /// Rounds over the whole matrix; each cell reports its median round (by req/s) and the
    /// range over all rounds, so a noisy moment of a shared machine moves no figure alone.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Writes the table here too.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Writes the SVG chart here.
    #[arg(long)]
    chart: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let bench = Bench {
        rest: args.rest,
        grpc: args.grpc,
        api_key: args.api_key.clone(),
        server_pid: args.server_pid,
        warmup: Duration::from_millis(args.warmup_ms),
        window: Duration::from_millis(args.window_ms),
        concurrency: args.concurrency.clone(),
        multiplexed_connections: args.multiplexed_connections.max(1),
    };
    match run(&bench, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)] // A CLI's error goes to stderr.
            {
                eprintln!("orders-protocols: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(bench: &Bench, args: &Args) -> Result<(), String> {
    let ids = seed(bench).await?;
    let cells = matrix(bench);
    let mut rounds: Vec<Vec<Measured>> = vec![Vec::new(); cells.len()];
    for round in 0..args.rounds.max(1) {
        for (index, cell) in cells.iter().enumerate() {
            let measured = measure(bench, *cell, &ids, round).await?;
            rounds[index].push(measured);
        }
    }
    let results: Vec<Median> = rounds.into_iter().map(Median::of).collect();
    let table = markdown(&results);
    #[allow(clippy::print_stdout)] // The table is the program's output.
    {
        println!("{table}");
    }
    if let Some(path) = &args.report {
        std::fs::write(path, &table).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        let chart = svg("orders: REST vs gRPC, guardrails on", &results);
        std::fs::write(path, chart).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let failed = results
        .iter()
        .any(|m| m.runs.iter().any(|r| r.failures > 0 || r.requests == 0));
    if failed {
        return Err("some requests failed: the figures above are not comparable".to_owned());
    }
    Ok(())
}

async fn measure(
    bench: &Bench,
    cell: Cell,
    ids: &[String],
    round: usize,
) -> Result<Measured, String> {
    {
        let measured = run_cell(bench, cell, ids).await?;
        #[allow(clippy::print_stderr)] // Progress, apart from the table on stdout.
        {
            eprintln!(
                "round {} {} / {} / {}×{}: {:.0} req/s, {} failed{}",
                round + 1,
                cell.operation.label(),
                cell.transport.label(),
                cell.connections,
                cell.concurrency / cell.connections.max(1),
                measured.per_second(),
                measured.failures,
                measured
                    .first_failure
                    .as_ref()
                    .map(|f| format!(" (first: {f})"))
                    .unwrap_or_default()
            );
        }
        Ok(measured)
    }
}
