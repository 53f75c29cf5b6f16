//! The `sealcast` command: parse the CLI, load config, init telemetry, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Parser, Subcommand};
use sealcast::auth::{MintClaims, unix_now};
use sealcast::config::{Config, MIN_SECRET_BYTES};
use sealcast::{Server, dev, payload, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sealcast",
    version,
    about = "Realtime relay for end-to-end encrypted app events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// Config file (TOML).
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Dev mode: one app with a random secret, on 127.0.0.1:8080 (SEALCAST_LISTEN overrides).
        #[arg(long)]
        dev: bool,
    },
    /// Print a fresh app secret and a fresh payload key.
    Keygen,
    /// Probe a running relay (the container's HEALTHCHECK): exit 0 on a 2xx answer, 1 otherwise.
    Health {
        /// The probe's URL (plain HTTP; the admin listener's /readyz or /healthz).
        #[arg(long, default_value = "http://127.0.0.1:9090/readyz")]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Mint a token for operators and scripts.
    Token {
        #[command(subcommand)]
        kind: TokenKind,
    },
    /// Encrypt a payload as an app does (AES-256-GCM, channel and event bound).
    Encrypt {
        #[command(flatten)]
        key: KeySource,
        /// Channel.
        #[arg(long)]
        channel: String,
        /// Event.
        #[arg(long)]
        event: String,
        /// Plaintext (UTF-8 JSON).
        plaintext: String,
    },
    /// Decrypt a `data` field as a client does.
    Decrypt {
        #[command(flatten)]
        key: KeySource,
        /// Channel.
        #[arg(long)]
        channel: String,
        /// Event.
        #[arg(long)]
        event: String,
        /// The base64 `data`.
        data: String,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct KeySource {
    /// Environment variable holding the payload key (standard base64 of 32 bytes).
    #[arg(long)]
    key_env: Option<String>,
    /// File holding the payload key (standard base64 of 32 bytes).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct SecretSource {
    /// Environment variable holding the app secret.
    #[arg(long)]
    secret_env: Option<String>,
    /// File holding the app secret.
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TokenKind {
    /// A connect token for one user and namespace.
    Connect {
        #[arg(long)]
        app: String,
        #[arg(long)]
        ns: String,
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 1h (at most 24h).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long)]
        kid: Option<String>,
        #[arg(long)]
        jti: Option<String>,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// A publish token.
    Publish {
        #[arg(long)]
        app: String,
        /// Limit the token to one namespace.
        #[arg(long)]
        ns: Option<String>,
        /// Lifetime, e.g. 60s (at most 300s).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long)]
        kid: Option<String>,
        #[command(flatten)]
        secret: SecretSource,
    },
}

fn read_source(env: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    let mut bytes = match (env, file) {
        (Some(var), _) => std::env::var_os(var)
            .with_context(|| format!("environment variable {var} is not set"))?
            .into_encoded_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None) => bail!("give --*-env or --*-file"),
    };
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

fn payload_key(k: &KeySource) -> anyhow::Result<Vec<u8>> {
    let text = read_source(&k.key_env, &k.key_file)?;
    let key = STANDARD
        .decode(&text)
        .context("payload key must be standard base64")?;
    if key.len() != payload::KEY_BYTES {
        bail!("payload key must decode to 32 bytes, got {}", key.len());
    }
    Ok(key)
}

fn app_secret(s: &SecretSource) -> anyhow::Result<Vec<u8>> {
    let secret = read_source(&s.secret_env, &s.secret_file)?;
    if secret.len() < MIN_SECRET_BYTES {
        bail!(
            "app secret is {} bytes; at least {MIN_SECRET_BYTES} required",
            secret.len()
        );
    }
    Ok(secret)
}

fn ttl_secs(d: Duration) -> anyhow::Result<i64> {
    let s = i64::try_from(d.as_secs())?;
    if s == 0 {
        bail!("--ttl must be at least 1s");
    }
    Ok(s)
}

async fn serve(config: Option<PathBuf>, dev_mode: bool) -> anyhow::Result<()> {
    let (config, dev_secrets) = if dev_mode {
        let listen: SocketAddr = match std::env::var("SEALCAST_LISTEN") {
            Ok(v) => v
                .parse()
                .context("SEALCAST_LISTEN is not a socket address")?,
            Err(_) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let (c, s) = dev::config(listen);
        (c, Some(s))
    } else {
        let path = config.context("give --config FILE, or --dev to try sealcast out")?;
        (
            Config::load(&path)
                .with_context(|| format!("refusing to start with {}", path.display()))?,
            None,
        )
    };
    telemetry::init(config.log_format);
    raise_file_limit(config.limits.max_connections);
    let server = Server::bind(config.clone())
        .await
        .with_context(|| format!("cannot start on {}", config.listen))?;
    let addr = server.local_addr()?;
    if config.tls.is_none() {
        tracing::warn!(
            "no [tls] configured: serving plain HTTP/WS (put sealcast behind a TLS-terminating ingress)"
        );
    }
    if config.allowed_origins.is_none() {
        tracing::warn!("allowed_origins is not set: WebSockets from every origin are accepted");
    }
    sealcast::reload::on_sighup(std::sync::Arc::clone(server.state()));
    if let Some(s) = &dev_secrets {
        println!("{}", dev::banner(addr, s));
    }
    tracing::info!(%addr, apps = config.apps.len(), "sealcast listening");
    // Printed before the listening line, which tools take as "started".
    if let Some(admin) = server.admin_addr()? {
        tracing::info!(%admin, "admin endpoints (/metrics, /healthz, /readyz)");
        println!("sealcast admin listening on http://{admin}");
    }
    // The one stdout line tools wait for.
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("sealcast listening on {scheme}://{addr}");
    let stop = CancellationToken::new();
    shutdown::on_signals(stop.clone());
    server.run(stop).await?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one: each connection is a file descriptor.
fn raise_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Listeners, the log, and a margin for outgoing sockets.
            let ceiling = limit.saturating_sub(64);
            tracing::info!(
                open_files = limit,
                connection_ceiling = ceiling,
                "file descriptor limit raised to the hard limit"
            );
            if (max_connections as u64) > ceiling {
                tracing::warn!(
                    max_connections,
                    connection_ceiling = ceiling,
                    "limits.max_connections is above what the file limit allows"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, dev } => serve(config, dev).await,
        Command::Health { url, timeout } => sealcast::health::check(&url, timeout).await,
        Command::Keygen => {
            println!(
                "app secret (for secret_env / secret_file): {}",
                dev::fresh_secret_text()
            );
            println!(
                "payload key (base64, 32 bytes; give it to your app and its clients, never to the relay): {}",
                STANDARD.encode(payload::generate_key())
            );
            Ok(())
        }
        Command::Token { kind } => {
            let now = unix_now();
            let token = match kind {
                TokenKind::Connect {
                    app,
                    ns,
                    sub,
                    ttl,
                    kid,
                    jti,
                    secret,
                } => {
                    let mut c = MintClaims::connect(&app, &ns, &sub, now, ttl_secs(ttl)?);
                    c.jti = jti;
                    c.sign(kid.as_deref(), &app_secret(&secret)?)
                }
                TokenKind::Publish {
                    app,
                    ns,
                    ttl,
                    kid,
                    secret,
                } => MintClaims::publish(&app, ns.as_deref(), now, ttl_secs(ttl)?)
                    .sign(kid.as_deref(), &app_secret(&secret)?),
            };
            println!("{token}");
            Ok(())
        }
        Command::Encrypt {
            key,
            channel,
            event,
            plaintext,
        } => {
            let data =
                payload::encrypt(&payload_key(&key)?, &channel, &event, plaintext.as_bytes())?;
            println!("{data}");
            Ok(())
        }
        Command::Decrypt {
            key,
            channel,
            event,
            data,
        } => {
            let plain = payload::decrypt(&payload_key(&key)?, &channel, &event, &data)?;
            println!("{}", String::from_utf8_lossy(&plain));
            Ok(())
        }
    }
}
