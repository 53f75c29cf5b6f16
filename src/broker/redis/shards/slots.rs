//! The slot map of a Redis Cluster, from `CLUSTER SLOTS`.

use redis::Value;

use super::Addr;

/// The primary that owns `slot`.
pub(super) fn owner(ranges: &[(u16, u16, Addr)], slot: u16) -> Option<Addr> {
    ranges
        .iter()
        .find(|(a, b, _)| (*a..=*b).contains(&slot))
        .map(|(_, _, addr)| addr.clone())
}

/// Each primary with its first slot range.
pub(super) fn primaries(ranges: &[(u16, u16, Addr)]) -> Vec<(Addr, (u16, u16))> {
    let mut out: Vec<(Addr, (u16, u16))> = Vec::new();
    for (first, last, addr) in ranges {
        if !out.iter().any(|(a, _)| a == addr) {
            out.push((addr.clone(), (*first, *last)));
        }
    }
    out
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, id, ...], replicas...], ...]`, sorted.
pub(super) fn parse_slots(v: &Value) -> Option<Vec<(u16, u16, Addr)>> {
    let Value::Array(rows) = v else { return None };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Array(row) = row else { return None };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
            (row.first(), row.get(1), row.get(2))
        else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let Value::Int(port) = primary.get(1)? else {
            return None;
        };
        out.push((
            u16::try_from(*first).ok()?,
            u16::try_from(*last).ok()?,
            (host, u16::try_from(*port).ok()?),
        ));
    }
    out.sort();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_slot_map_parses_and_finds_owners() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7001), bulk("id2")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7004), bulk("id5")]),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id1")]),
            ]),
        ]);
        let ranges = parse_slots(&reply).unwrap();
        assert_eq!(owner(&ranges, 0), Some(("127.0.0.1".into(), 7000)));
        assert_eq!(owner(&ranges, 16383), Some(("127.0.0.1".into(), 7001)));
        assert_eq!(primaries(&ranges).len(), 2);
        assert!(parse_slots(&Value::Array(vec![Value::Int(1)])).is_none());
        assert!(parse_slots(&bulk("x")).is_none());
    }
}
