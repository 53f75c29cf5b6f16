//! The `sealcast` command: parse the CLI, load config, init telemetry, run.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Parser, Subcommand};
use sealcast::auth::{MintClaims, TokenPolicy, unix_now};
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
    Keygen {
        /// Output format: text for a person, env for `NAME=value` lines
        /// (SEALCAST_APP_SECRET, SEALCAST_PAYLOAD_KEY), json for one object.
        #[arg(long, value_enum, default_value = "text")]
        format: cli::KeyFormat,
    },
    /// Probe a running relay (the container's HEALTHCHECK): exit 0 on a 2xx answer, 1 otherwise.
    Health {
        /// The probe's URL (plain HTTP; the admin listener's /readyz or /healthz).
        #[arg(long, default_value = "http://127.0.0.1:9090/readyz")]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Mint a token for operators and scripts, or check one.
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
        /// App id (the token's `iss`; an `[[apps]] id` of the relay).
        #[arg(long)]
        app: String,
        /// The one namespace the token grants, e.g. site/1/dashboard/7 (printable ASCII,
        /// no space, no '#'; channels are `<ns>#<topic>`).
        #[arg(long)]
        ns: String,
        /// The user's account id, 1 to 128 bytes (for audit and revocation by sub).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 1h (at most 24h, tokens.max_connect_lifetime).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Key id of the secret (`[[apps.keys]] kid`), put in the token's header.
        #[arg(long)]
        kid: Option<String>,
        /// Token id, 1 to 128 bytes, for revoking this one token (`POST /v1/revoke`).
        #[arg(long)]
        jti: Option<String>,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// A publish token.
    Publish {
        /// App id (the token's `iss`; an `[[apps]] id` of the relay).
        #[arg(long)]
        app: String,
        /// Limit the token to channels of this one namespace (without it, the token
        /// publishes to every channel of the app and may revoke).
        #[arg(long)]
        ns: Option<String>,
        /// Lifetime, e.g. 60s (at most 300s, tokens.max_publish_lifetime).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Key id of the secret (`[[apps.keys]] kid`), put in the token's header.
        #[arg(long)]
        kid: Option<String>,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// Check a token as the relay would: print its claims, or exit non-zero naming the
    /// exact reason it would be refused.
    Verify(cli::verify::VerifyArgs),
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

/// Signs claims that pass the relay's rules (at their protocol maxima); claims it would
/// refuse are an error here, naming the rule, rather than a 401 later.
fn mint(claims: MintClaims, kid: Option<&str>, secret: &SecretSource) -> anyhow::Result<String> {
    claims
        .check(kid, &TokenPolicy::default())
        .context("this token would be refused by the relay")?;
    Ok(claims.sign(kid, &app_secret(secret)?))
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
    raise_file_limit(
        config.limits.max_connections,
        config.limits.max_connections_explicit,
    );
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
/// A `max_connections` the operator set above what the limit allows is a warning; the
/// default is no request, so then the effective ceiling is only logged.
fn raise_file_limit(max_connections: usize, explicit: bool) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Listeners, the log, and a margin for outgoing sockets.
            let ceiling = limit.saturating_sub(64);
            tracing::info!(
                open_files = limit,
                connection_ceiling = ceiling,
                "file descriptor limit raised to the hard limit"
            );
            if (max_connections as u64) > ceiling && explicit {
                tracing::warn!(
                    max_connections,
                    connection_ceiling = ceiling,
                    "limits.max_connections is above what the file limit allows"
                );
            } else if (max_connections as u64) > ceiling {
                tracing::info!(
                    connection_ceiling = ceiling,
                    "open connections are bounded by the file limit (below the default limits.max_connections)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::report::fail(&e),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, dev } => serve(config, dev).await,
        Command::Health { url, timeout } => sealcast::health::check(&url, timeout).await,
        Command::Keygen { format } => {
            let secret = dev::fresh_secret_text();
            let key = STANDARD.encode(payload::generate_key());
            println!("{}", cli::keygen_output(format, &secret, &key));
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
                    mint(c, kid.as_deref(), &secret)?
                }
                TokenKind::Publish {
                    app,
                    ns,
                    ttl,
                    kid,
                    secret,
                } => mint(
                    MintClaims::publish(&app, ns.as_deref(), now, ttl_secs(ttl)?),
                    kid.as_deref(),
                    &secret,
                )?,
                TokenKind::Verify(args) => {
                    let secret = app_secret(&args.secret)?;
                    return cli::verify::run(args, secret);
                }
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
            let plain = payload::decrypt(&payload_key(&key)?, &channel, &event, &data)
                .map_err(|e| match e {
                    payload::PayloadError::Authentication => anyhow::anyhow!(
                        "{e}: check the key, channel and event (all three must be the ones it was encrypted with)"
                    ),
                    other => other.into(),
                })?;
            println!("{}", String::from_utf8_lossy(&plain));
            Ok(())
        }
    }
}
