//! `sealcast health`: the container's health check. The image has no shell and no curl,
//! so the binary probes itself: one GET, success on a 2xx answer.

use std::time::Duration;

use anyhow::{Context, bail};

/// GETs `url` (plain `http://` on a local address, as a probe of the admin listener is)
/// within `timeout`; Ok on 2xx.
pub async fn check(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let parsed: reqwest::Url = url
        .parse()
        .with_context(|| format!("--url {url:?} is not a URL"))?;
    if parsed.scheme() != "http" {
        bail!("--url must be http:// (probe the admin listener, which is plain HTTP)");
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        // A probe must reach this container, never an HTTP_PROXY from the environment.
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let r = client
        .get(parsed)
        .send()
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = r.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(())
}
