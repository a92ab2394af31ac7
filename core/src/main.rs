//! The `switchyard` binary: parse the command line and hand over to the library.

use clap::Parser;
use switchyard_core::cli::{self, Cli, Command};

/// mimalloc: measured faster than glibc malloc for the gateway's many small, short-lived
/// allocations, and it frees memory allocated on another thread (request workers allocate
/// ledger records, the ledger writer frees them) without arena lock contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Before any thread exists: candle's matrix products read it on every call.
    switchyard_models::settle_thread_count();
    let args = Cli::parse();
    match args.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            exit_with_parent,
        } => {
            let config = cli::serve_config(config, listen, data_dir)?;
            let _telemetry = switchyard_core::telemetry::init(&config.log, &config.observability);
            actix_rt::System::new().block_on(async move {
                let running = switchyard_core::server::start(config).await?;
                let ledger = std::sync::Arc::clone(&running.state.ledger);
                if exit_with_parent {
                    let parent = rustix::process::getppid();
                    let handle = running.handle.clone();
                    actix_rt::spawn(async move {
                        loop {
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            // An orphan is adopted by init (or a subreaper): its parent changes.
                            if rustix::process::getppid() != parent {
                                tracing::warn!("the parent process is gone: shutting down");
                                handle.stop(true).await;
                                return;
                            }
                        }
                    });
                }
                running.wait().await?;
                // Write what is still buffered before the process ends.
                ledger.flush().await;
                anyhow::Ok(())
            })
        }
        Command::Stats {
            url,
            key,
            days,
            json,
        } => cli::stats_command(&url, key.as_deref(), days, json, &mut std::io::stdout()),
        Command::Router {
            command:
                cli::RouterCommand::Eval {
                    data,
                    holdout,
                    seed,
                    out,
                    models_dir,
                    window,
                },
        } => cli::router_eval(
            &switchyard_core::router::learn::EvalOptions {
                data,
                holdout,
                seed,
                out,
                models_dir: models_dir.unwrap_or_else(switchyard_models::ModelStore::default_dir),
                window,
            },
            &mut std::io::stdout(),
        ),
        Command::Router {
            command:
                cli::RouterCommand::Simulate {
                    policy,
                    limit,
                    url,
                    key,
                },
        } => cli::router_simulate(&url, key.as_deref(), &policy, limit, &mut std::io::stdout()),
        Command::Router {
            command:
                cli::RouterCommand::Train {
                    data,
                    from_ledger,
                    limit,
                    out,
                    models_dir,
                    url,
                    key,
                },
        } => cli::router_train(
            data,
            from_ledger.then_some((url.as_str(), key.as_deref(), limit)),
            out,
            models_dir.unwrap_or_else(switchyard_models::ModelStore::default_dir),
            &mut std::io::stdout(),
        ),
        Command::Cache {
            command:
                cli::CacheCommand::Eval {
                    data,
                    limit,
                    holdout,
                    seed,
                    target_precision,
                    out,
                    models_dir,
                },
        } => cli::cache_eval(
            &switchyard_core::cache::learn::EvalOptions {
                data,
                limit,
                holdout,
                seed,
                target_precision,
                out,
                models_dir: models_dir.unwrap_or_else(switchyard_models::ModelStore::default_dir),
            },
            &mut std::io::stdout(),
        ),
        Command::Jobs { command } => cli::jobs_command(command, &mut std::io::stdout()),
        Command::CheckConfig { file } => Ok(cli::check_config(&file, &mut std::io::stdout())?),
        Command::HashKey { generate } => Ok(cli::hash_key_command(
            generate,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout(),
        )?),
    }
}
