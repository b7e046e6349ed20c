//! `orders`: runs the orders service. See `orders --help`.

use std::time::Duration;

use clap::Parser;
use orders::{App, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    // One JSON object per line: the access log (target `orders::access`) and everything else.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(
            EnvFilter::try_from_env("ORDERS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let code = match run(config).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "orders stopped");
            1
        }
    };
    // Exit now: the runtime's drop would otherwise wait for tasks still stuck on a
    // dependency, and the grace period is over.
    std::process::exit(code);
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let app = App::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let grpc_listener = match config.grpc_listen {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await?),
        None => None,
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        grpc_listen = grpc_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()),
        database = ?app.database().backend(),
        stores = if config.redis.is_some() { "redis" } else { "memory" },
        guardrails = !config.demo_disable_guardrails,
        "orders listening"
    );
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let announcing = app.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            ?grace,
            "shutting down: no new connections, finishing requests in flight"
        );
        announcing.announce_shutdown().await;
        let _ = stop.send(true);
    });
    let shutdown = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    // The grace period bounds the whole exit: draining connections, then closing the pool,
    // which keeps its own share (a second, or half of a shorter grace) so slow connections
    // cannot starve a clean close.
    let close_budget = Duration::from_secs(1).min(grace / 2);
    let drain = grace.saturating_sub(close_budget);
    let rest = orders::serve::serve(
        listener,
        app.router(),
        &config.limits,
        shutdown(stopped.clone()),
        drain,
    );
    match grpc_listener {
        None => rest.await?,
        Some(grpc_listener) => {
            let grpc = orders::serve::serve_grpc(
                grpc_listener,
                app.grpc_router(),
                &config.limits,
                shutdown(stopped),
                drain,
            );
            let (rest, grpc) = tokio::join!(rest, grpc);
            rest?;
            grpc?;
        }
    }
    if tokio::time::timeout(close_budget, app.database().close())
        .await
        .is_err()
    {
        tracing::warn!("the database did not close within the grace period; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
