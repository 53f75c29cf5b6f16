//! Secrets and connection strings of the configuration: app keys and Redis URLs, read only
//! from files or the environment (never inline when they carry a credential).

use super::*;

/// The Redis URL of a `[broker]` of kind `redis`: inline only without credentials, else
/// from the environment.
pub(super) fn redis_url(
    b: &BrokerConfig,
    env: &impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Option<Secret>, ConfigError> {
    let given = usize::from(b.redis_url.is_some())
        + usize::from(b.redis_url_env.is_some())
        + usize::from(b.redis_url_file.is_some());
    if b.kind == BrokerKind::RedisCluster {
        // One seed node: read by redis_seeds.
        return Ok(None);
    }
    if b.kind == BrokerKind::RedisSentinel && given == 0 {
        return Ok(None);
    }
    if b.kind != BrokerKind::Redis {
        if given > 0 {
            return Err(invalid(
                "broker.kind",
                "a Redis URL is given but kind is not \"redis\"",
            ));
        }
        return Ok(None);
    }
    if given != 1 {
        return Err(invalid(
            "broker",
            "kind \"redis\" needs exactly one of redis_url, redis_url_file or redis_url_env",
        ));
    }
    let url = if let Some(url) = &b.redis_url {
        let authority = url.split_once("://").map_or("", |(_, r)| r);
        let authority = authority.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(invalid(
                "broker.redis_url",
                "a URL with credentials must come from redis_url_file or redis_url_env (secrets only from files or the environment)",
            ));
        }
        url.clone()
    } else if let Some(path) = &b.redis_url_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(
                "broker.redis_url_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let var = b.redis_url_env.as_deref().unwrap_or_default();
        env(var)
            .ok_or_else(|| {
                invalid(
                    "broker.redis_url_env",
                    format!("environment variable {var} is not set"),
                )
            })?
            .to_string_lossy()
            .into_owned()
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(invalid(
            "broker.redis_url",
            "must start with redis:// or rediss://",
        ));
    }
    Ok(Some(Secret::new(url.into_bytes())))
}

/// The seed nodes of a `[broker]` of kind `redis-cluster`: a list (`redis_urls`, inline
/// only without credentials; `redis_urls_env`, separated by commas or whitespace;
/// `redis_urls_file`, one per line) or one seed through the `redis_url` keys.
pub(super) fn redis_seeds(
    b: &BrokerConfig,
    env: &impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<Secret>, ConfigError> {
    let lists = usize::from(b.redis_urls.is_some())
        + usize::from(b.redis_urls_env.is_some())
        + usize::from(b.redis_urls_file.is_some());
    if b.kind != BrokerKind::RedisCluster {
        if lists > 0 {
            return Err(invalid(
                "broker.kind",
                "seed nodes (redis_urls) are given but kind is not \"redis-cluster\"",
            ));
        }
        return Ok(Vec::new());
    }
    let singles = usize::from(b.redis_url.is_some())
        + usize::from(b.redis_url_env.is_some())
        + usize::from(b.redis_url_file.is_some());
    if lists + singles != 1 {
        return Err(invalid(
            "broker",
            "kind \"redis-cluster\" needs exactly one of redis_urls, redis_urls_file, redis_urls_env, redis_url, redis_url_file or redis_url_env",
        ));
    }
    if singles == 1 {
        let single = BrokerConfig {
            kind: BrokerKind::Redis,
            ..b.clone()
        };
        return Ok(redis_url(&single, env)?.into_iter().collect());
    }
    url_list(
        "redis_urls",
        (&b.redis_urls, &b.redis_urls_env, &b.redis_urls_file),
        env,
    )
}

/// The sentinels of a `[broker]` of kind `redis-sentinel` (`sentinel_urls`, `_env` or
/// `_file`, as for `redis_urls`) with `sentinel_master`.
pub(super) fn sentinel_urls(
    b: &BrokerConfig,
    env: &impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<Secret>, ConfigError> {
    let lists = usize::from(b.sentinel_urls.is_some())
        + usize::from(b.sentinel_urls_env.is_some())
        + usize::from(b.sentinel_urls_file.is_some());
    if b.kind != BrokerKind::RedisSentinel {
        if lists > 0 || b.sentinel_master.is_some() {
            return Err(invalid(
                "broker.kind",
                "sentinel_urls or sentinel_master are given but kind is not \"redis-sentinel\"",
            ));
        }
        return Ok(Vec::new());
    }
    if lists != 1 {
        return Err(invalid(
            "broker",
            "kind \"redis-sentinel\" needs exactly one of sentinel_urls, sentinel_urls_file or sentinel_urls_env",
        ));
    }
    let master = b.sentinel_master.as_deref().unwrap_or_default();
    if master.is_empty()
        || master.len() > 128
        || !master
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
    {
        return Err(invalid(
            "broker.sentinel_master",
            "kind \"redis-sentinel\" needs sentinel_master, 1 to 128 of [A-Za-z0-9._-]",
        ));
    }
    url_list(
        "sentinel_urls",
        (
            &b.sentinel_urls,
            &b.sentinel_urls_env,
            &b.sentinel_urls_file,
        ),
        env,
    )
}

/// A list of Redis URLs from the config (no credentials), an environment variable (commas
/// or whitespace) or a file (one per line).
fn url_list(
    key: &str,
    (list, var, file): (&Option<Vec<String>>, &Option<String>, &Option<PathBuf>),
    env: &impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<Secret>, ConfigError> {
    let urls: Vec<String> = if let Some(list) = list {
        for (i, url) in list.iter().enumerate() {
            let authority = url.split_once("://").map_or("", |(_, r)| r);
            if authority.split('/').next().unwrap_or("").contains('@') {
                return Err(invalid(
                    format!("broker.{key}[{i}]"),
                    format!(
                        "a URL with credentials must come from {key}_file or {key}_env (secrets only from files or the environment)"
                    ),
                ));
            }
        }
        list.clone()
    } else if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(
                format!("broker.{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    } else {
        let var = var.as_deref().unwrap_or_default();
        env(var)
            .ok_or_else(|| {
                invalid(
                    format!("broker.{key}_env"),
                    format!("environment variable {var} is not set"),
                )
            })?
            .to_string_lossy()
            .split([',', ' ', '\n', '\t'])
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect()
    };
    if urls.is_empty() || urls.len() > 64 {
        return Err(invalid(format!("broker.{key}"), "give 1 to 64 URLs"));
    }
    if urls
        .iter()
        .any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
    {
        return Err(invalid(
            format!("broker.{key}"),
            "every URL must start with redis:// or rediss://",
        ));
    }
    Ok(urls
        .into_iter()
        .map(|u| Secret::new(u.into_bytes()))
        .collect())
}

pub(super) fn load_secret(
    at: &str,
    key: &RawKey,
    env: &impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Secret, ConfigError> {
    let mut bytes = match (&key.secret_env, &key.secret_file) {
        (Some(var), None) => {
            let value = env(var).ok_or_else(|| {
                invalid(
                    format!("{at}.secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            value.into_encoded_bytes()
        }
        (None, Some(path)) => std::fs::read(path).map_err(|e| {
            invalid(
                format!("{at}.secret_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?,
        _ => {
            return Err(invalid(
                at,
                "give exactly one of secret_env or secret_file (never an inline secret)",
            ));
        }
    };
    // A trailing newline from `echo` or an editor is not part of the secret.
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let secret = Secret::new(bytes);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(invalid(
            at,
            format!(
                "secret (kid {:?}) is {} bytes; at least {MIN_SECRET_BYTES} required",
                key.kid,
                secret.len()
            ),
        ));
    }
    Ok(secret)
}
