//! Revocations through Redis: a key per revocation (`EXAT until`) so a node that starts
//! later loads them, and a message on the pub/sub channel so live nodes apply them at once.

use super::commands::Commands;

use crate::broker::SharedRevocation;
use crate::protocol::AppId;
use crate::revocation::Target;

/// Messages on the pub/sub channel that are not publications start with this (an app id
/// cannot contain `!`).
pub(super) const REVOCATION_MESSAGE: &str = "!rev ";

/// How a revocation target is written in keys and messages: `s` or `j`, and the value.
pub(super) fn kind_value(target: &Target) -> (&'static str, &str) {
    match target {
        Target::Sub(s) => ("s", s),
        Target::Jti(j) => ("j", j),
    }
}

/// `<app> <s|j> <until> <value>` (the value last: it may contain spaces).
pub(super) fn parse_revocation_message(text: &[u8]) -> Option<SharedRevocation> {
    let text = std::str::from_utf8(text).ok()?;
    let mut parts = text.splitn(4, ' ');
    let app = AppId::parse(parts.next()?).ok()?;
    let kind = parts.next()?;
    let until = parts.next()?.parse().ok()?;
    let target = target(kind, parts.next()?)?;
    Some(SharedRevocation { app, target, until })
}

pub(super) fn target(kind: &str, value: &str) -> Option<Target> {
    if value.is_empty() {
        return None;
    }
    match kind {
        "s" => Some(Target::Sub(value.to_string())),
        "j" => Some(Target::Jti(value.to_string())),
        _ => None,
    }
}

/// Hands every stored, live revocation to the relay (SCAN, so Redis is never blocked).
/// `prefix` is [`Layout::revocation_prefix`](super::layout::Layout::revocation_prefix); on a
/// cluster every revocation key lives in `slot`, so the scan runs on that slot's primary.
pub(super) async fn load_revocations(
    commands: &mut Commands,
    prefix: &str,
    slot: u16,
    apply: &(dyn Fn(&SharedRevocation) + Send + Sync),
) -> redis::RedisResult<()> {
    let pattern = format!("{prefix}*");
    let strip = prefix;
    let mut cursor: u64 = 0;
    loop {
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone();
        let (next, keys): (u64, Vec<String>) = commands.on_slot(&scan, slot).await?;
        if !keys.is_empty() {
            let untils: Vec<Option<i64>> =
                redis::cmd("MGET").arg(&keys).query_async(commands).await?;
            for (key, until) in keys.iter().zip(untils) {
                let parsed = key.strip_prefix(strip).and_then(|rest| {
                    let mut p = rest.splitn(3, ':');
                    let app = AppId::parse(p.next()?).ok()?;
                    let kind = p.next()?;
                    Some(SharedRevocation {
                        app,
                        target: target(kind, p.next()?)?,
                        until: until?,
                    })
                });
                if let Some(r) = parsed {
                    apply(&r);
                }
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_messages_and_keys_round_trip() {
        let r = SharedRevocation {
            app: AppId::parse("acme").unwrap(),
            target: Target::Sub("user with spaces:and:colons".into()),
            until: 1_900_000_000,
        };
        let message = format!("acme s {} user with spaces:and:colons", r.until);
        assert_eq!(
            parse_revocation_message(message.as_bytes()),
            Some(r.clone())
        );
        assert_eq!(
            super::super::layout::Layout::single("p", 0).revocation_key(&r),
            "p:rv:acme:s:user with spaces:and:colons"
        );
        for bad in [
            "acme x 1 v",
            "acme s soon v",
            "acme s 1 ",
            "a!b s 1 v",
            "acme s",
        ] {
            assert_eq!(parse_revocation_message(bad.as_bytes()), None, "{bad}");
        }
    }
}
