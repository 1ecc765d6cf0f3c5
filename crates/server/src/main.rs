//! The `chouquette` binary: parses the command line and runs it.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chouquette::cli::{self, Cli, Command};
use chouquette::demo::DemoOptions;
use chouquette::dev::DevOptions;
use chouquette::http_client::HttpClient;
use chouquette::{logging, serve};
use clap::Parser;

/// The allocator. glibc's keeps what a connection's task frees in holes
/// between live allocations: with idle WebSockets parking (their task freed
/// and spawned anew when woken), 19,000 idle connections held 3,648 B of
/// RSS each with glibc against 2,444 B with a size-class allocator
/// (jemalloc, measured with `chouquette-bench --scenario idle -n 19000`);
/// mimalloc is the lighter build of the two.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let reason = format!("{e:#}").replace('\n', " ");
            eprintln!("chouquette: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = cli::serve_config(config)?;
            // Before any TLS is set up, whatever provider features the
            // build happens to unify (see tls.rs).
            chouquette::tls::install_provider();
            logging::init(config.log.format, &config.log.level);
            runtime()?.block_on(serve_until_signal(config))
        }
        Command::Demo {
            public,
            internal,
            rate,
            mqtt,
        } => {
            logging::init(chouquette::config::LogFormat::Text, "info");
            let mut options = DemoOptions::new(public, internal, rate);
            options.mqtt = mqtt.map(|url| chouquette::demo::MqttDemo {
                url,
                device_password: None,
            });
            runtime()?.block_on(demo(options))
        }
        Command::Dev {
            dir,
            routes,
            public,
            internal,
            app,
        } => {
            let options = DevOptions {
                dir,
                routes,
                public,
                internal,
                app,
            };
            let (config, secrets) = chouquette::dev::dev_config(&options)?;
            logging::init(chouquette::config::LogFormat::Text, "info");
            runtime()?.block_on(dev(config, options, secrets))
        }
        Command::Token {
            app,
            channel,
            filters,
            sub,
            groups,
            ttl,
        } => {
            println!(
                "{}",
                cli::token(&app, &channel, &filters, sub.as_deref(), &groups, ttl)?
            );
            Ok(())
        }
        Command::Publish(args) => runtime()?.block_on(publish(args)),
        Command::CheckConfig { file } => cli::check_config(&file),
    }
}

async fn demo(options: DemoOptions) -> anyhow::Result<()> {
    let running = chouquette::demo::start(options).await?;
    println!("Chouquette demo: open http://{}/", running.public);
    println!("  ?user=roger sees borne B1 and its critical alarms; ?user=vb sees everything");
    println!("  metrics: http://{}/metrics", running.internal);
    wait_for_signal().await?;
    running.shutdown().await;
    Ok(())
}

async fn dev(
    config: chouquette::config::Config,
    options: DevOptions,
    secrets: chouquette::dev::DevSecrets,
) -> anyhow::Result<()> {
    let running = serve::start(config).await?;
    println!("Chouquette dev: open http://{}/", running.public);
    for route in &options.routes {
        println!("  proxy {route}");
    }
    println!("  app `{}`; for your backend and the CLI:", options.app);
    println!("    export CHOUQUETTE_SECRET={}", secrets.secret);
    println!("    export CHOUQUETTE_API_KEY={}", secrets.api_key);
    println!("  publish API: http://{}/api/v1/publish", running.internal);
    wait_for_signal().await?;
    running.shutdown().await;
    Ok(())
}

async fn serve_until_signal(config: chouquette::config::Config) -> anyhow::Result<()> {
    let running = serve::start(config).await?;
    tell_systemd("READY=1");
    wait_for_signal_reloading(&running).await?;
    tracing::info!("stop requested");
    tell_systemd("STOPPING=1");
    running.shutdown().await;
    Ok(())
}

/// Tells systemd (`Type=notify`) the node's state; a failure is logged, not
/// fatal (systemd then times the start out and says so).
fn tell_systemd(state: &str) {
    #[cfg(unix)]
    if let Err(e) = chouquette::sd_notify::notify(state) {
        tracing::warn!(error = %e, state, "cannot notify systemd (NOTIFY_SOCKET)");
    }
    #[cfg(not(unix))]
    let _ = state;
}

/// Waits for SIGTERM or SIGINT; each SIGHUP meanwhile reloads the public
/// listener's TLS certificate (a failed reload keeps the old one: logged
/// and counted by `reload_tls`, never fatal).
#[cfg(unix)]
async fn wait_for_signal_reloading(running: &serve::Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            stopped = &mut stop => return stopped,
            _ = hup.recv() => {
                // A failed reload is logged and counted where it happened.
                if let Err(chouquette::tls::TlsError::NotConfigured) = running.reload_tls() {
                    tracing::info!("SIGHUP: no TLS on the public listener, nothing to reload");
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal_reloading(_running: &serve::Running) -> anyhow::Result<()> {
    wait_for_signal().await
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C")
}

async fn publish(args: cli::PublishArgs) -> anyhow::Result<()> {
    let cli::PublishArgs {
        app,
        channel,
        event_kind,
        keywords,
        key,
        data,
        id,
        url,
    } = args;
    let api_key = std::env::var("CHOUQUETTE_API_KEY")
        .context("set CHOUQUETTE_API_KEY to the app's API key")?;
    let data: serde_json::Value = match data {
        Some(d) => serde_json::from_str(&d).context("--data is not JSON")?,
        None => serde_json::Value::Null,
    };
    let mut event = serde_json::json!({
        "app_id": app, "channel": channel, "event_kind": event_kind,
        "keywords": keywords, "data": data,
    });
    if let Some(key) = key {
        event["key"] = key.into();
    }
    if let Some(id) = id {
        event["id"] = id.into();
    }
    let endpoint = format!("{}/api/v1/publish", url.trim_end_matches('/'));
    let (status, body) = HttpClient::default()
        .post_json(&endpoint, &api_key, event.to_string().into_bytes())
        .await
        .with_context(|| {
            format!("cannot publish to {endpoint} (set --url to the gateway's internal listener)")
        })?;
    if status != 200 {
        bail!("publish refused ({status}): {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}
