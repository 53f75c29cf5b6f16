//! Property tests of the protocol edge: frame parsing and name validation.
//!
//! Each name kind is checked against an oracle written from PROTOCOL.md 1 (not from the
//! code under test): whatever the parser accepts matches the grammar, whatever matches the
//! grammar is accepted and round-trips, and nothing panics. `ClientFrame::parse` is thrown
//! arbitrary text, arbitrary JSON values and mutations of valid frames.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::frames::{ClientFrame, FrameError, Since};
use super::names::{AppId, Channel, EventName, Namespace};

// ---- oracles, from PROTOCOL.md 1 and docs/protocol.md "Names" ----

fn oracle_namespace(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'#')
}

fn oracle_topic(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@/-".contains(&b))
}

fn oracle_event(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn oracle_app(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn oracle_channel(s: &str) -> bool {
    // The namespace has no '#', so the first '#' is the separator.
    s.split_once('#')
        .is_some_and(|(ns, topic)| oracle_namespace(ns) && oracle_topic(topic))
}

// ---- generators ----

const NS_CHARS: &str = "!\"$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

fn valid_namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex("[!-\"$-~]{1,256}").unwrap(),
        proptest::string::string_regex("[a-z0-9:/]{1,40}").unwrap(),
    ]
}

fn valid_topic() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9._:@/-]{1,128}").unwrap()
}

fn valid_event() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9._:-]{1,64}").unwrap()
}

fn valid_app() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9._-]{1,64}").unwrap()
}

fn valid_channel() -> impl Strategy<Value = String> {
    (valid_namespace(), valid_topic()).prop_map(|(ns, t)| format!("{ns}#{t}"))
}

/// Strings that look like names but are biased towards the edges: control characters,
/// space, '#', DEL, non-ASCII, and lengths around the limits.
fn name_like() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => proptest::sample::select(NS_CHARS.chars().collect::<Vec<_>>()),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => Just(' '),
        2 => Just('#'),
        1 => Just('\u{7f}'),
        1 => any::<char>(),
    ];
    prop_oneof![
        proptest::collection::vec(ch.clone(), 0..300).prop_map(|v| v.into_iter().collect()),
        // Around the length limits (64, 128, 256 and the channel's 256 + 1 + 128).
        (
            proptest::sample::select(vec![
                63usize, 64, 65, 127, 128, 129, 255, 256, 257, 385, 386
            ]),
            ch
        )
            .prop_map(|(n, c)| std::iter::repeat_n('a', n.saturating_sub(1))
                .chain(std::iter::once(c))
                .collect()),
        any::<String>(),
    ]
}

/// Inserts `c` at a char boundary near `at` of `s`.
fn insert_at(s: &str, at: usize, c: char) -> String {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push_str(&s[..i]);
    out.push(c);
    out.push_str(&s[i..]);
    out
}

fn forbidden_in_every_name() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::char::range('\0', '\u{1f}'),
        Just(' '),
        Just('\u{7f}'),
        proptest::char::range('\u{80}', char::MAX),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
        prop_oneof![
            Just("connect"),
            Just("subscribe"),
            Just("unsubscribe"),
            Just("refresh"),
            Just("ns#t"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("type".to_string()),
                        Just("id".to_string()),
                        Just("channel".to_string()),
                        Just("token".to_string()),
                        Just("since".to_string()),
                        Just("epoch".to_string()),
                        Just("offset".to_string()),
                        any::<String>(),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A frame object with a known `type` and fields of arbitrary shape.
fn frame_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("connect"),
            Just("subscribe"),
            Just("unsubscribe"),
            Just("refresh"),
            Just("Subscribe"),
            Just("pub"),
        ],
        proptest::option::of(arb_json()),
        proptest::option::of(prop_oneof![
            arb_json(),
            valid_channel().prop_map(Value::from)
        ]),
        proptest::option::of(arb_json()),
        proptest::option::of(arb_json()),
    )
        .prop_map(|(t, id, channel, token, since)| {
            let mut o = json!({ "type": t });
            if let Some(v) = id {
                o["id"] = v;
            }
            if let Some(v) = channel {
                o["channel"] = v;
            }
            if let Some(v) = token {
                o["token"] = v;
            }
            if let Some(v) = since {
                o["since"] = v;
            }
            o
        })
}

/// Whatever parse returns must agree with an independent reading of the same text.
fn check_parse_against_json(text: &str) {
    let result = ClientFrame::parse(text);
    let value: Option<Value> = serde_json::from_str(text).ok();
    match result {
        Ok(frame) => {
            let v = value.expect("accepted text must be JSON");
            assert!(v.is_object());
            let id = v.get("id").and_then(Value::as_u64);
            match frame {
                ClientFrame::Connect { token } => {
                    assert_eq!(v["type"], "connect");
                    assert_eq!(v["token"].as_str(), Some(token.as_str()));
                }
                ClientFrame::Subscribe {
                    id: got,
                    channel,
                    since,
                } => {
                    assert_eq!(v["type"], "subscribe");
                    assert_eq!(got, id);
                    assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
                    assert!(oracle_channel(channel.as_str()), "{channel:?}");
                    match since {
                        None => assert!(v.get("since").is_none_or(Value::is_null)),
                        Some(Since { epoch, offset }) => {
                            assert_eq!(v["since"]["epoch"].as_str(), Some(epoch.as_str()));
                            assert_eq!(v["since"]["offset"].as_u64(), Some(offset));
                        }
                    }
                }
                ClientFrame::Unsubscribe { id: got, channel } => {
                    assert_eq!(v["type"], "unsubscribe");
                    assert_eq!(got, id);
                    assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
                    assert!(oracle_channel(channel.as_str()), "{channel:?}");
                }
                ClientFrame::Refresh { id: got, token } => {
                    assert_eq!(v["type"], "refresh");
                    assert_eq!(got, id);
                    assert_eq!(v["token"].as_str(), Some(token.as_str()));
                }
            }
        }
        Err(FrameError::BadRequest { id, message }) => {
            // Only a known type gets a bad_request; the id echoed is the frame's own.
            let v = value.expect("a bad_request frame is JSON");
            let t = v["type"].as_str().expect("a bad_request frame has a type");
            assert!(
                ["connect", "subscribe", "unsubscribe", "refresh"].contains(&t),
                "{t}"
            );
            if let Some(id) = id {
                assert_eq!(v["id"].as_u64(), Some(id));
            }
            // The reply never grows with the input.
            assert!(message.len() <= 160, "{}", message.len());
        }
        Err(FrameError::Violation) => {
            // A violation is anything that is not an object with a known string type.
            if let Some(v) = value {
                let known = v
                    .as_object()
                    .and_then(|o| o.get("type"))
                    .and_then(Value::as_str);
                assert!(
                    !matches!(
                        known,
                        Some("connect" | "subscribe" | "unsubscribe" | "refresh")
                    ),
                    "known type answered as a violation: {text}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // ---- names ----

    #[test]
    fn accepted_names_match_the_grammar(s in name_like()) {
        prop_assert_eq!(Channel::parse(&s).is_ok(), oracle_channel(&s), "channel {:?}", s);
        prop_assert_eq!(Namespace::parse(&s).is_ok(), oracle_namespace(&s), "namespace {:?}", s);
        prop_assert_eq!(EventName::parse(&s).is_ok(), oracle_event(&s), "event {:?}", s);
        prop_assert_eq!(AppId::parse(&s).is_ok(), oracle_app(&s), "app {:?}", s);
    }

    #[test]
    fn arbitrary_strings_never_break_the_name_parsers(s in any::<String>()) {
        prop_assert_eq!(Channel::parse(&s).is_ok(), oracle_channel(&s));
        prop_assert_eq!(Namespace::parse(&s).is_ok(), oracle_namespace(&s));
        prop_assert_eq!(EventName::parse(&s).is_ok(), oracle_event(&s));
        prop_assert_eq!(AppId::parse(&s).is_ok(), oracle_app(&s));
    }

    #[test]
    fn valid_channels_round_trip(ns in valid_namespace(), topic in valid_topic()) {
        let s = format!("{ns}#{topic}");
        let c = Channel::parse(&s).expect("valid channel refused");
        prop_assert_eq!(c.as_str(), s.as_str());
        prop_assert_eq!(c.to_string(), s.clone());
        prop_assert_eq!(c.namespace(), ns.as_str());
        prop_assert_eq!(c.topic(), topic.as_str());
        let n = Namespace::parse(&ns).expect("valid namespace refused");
        prop_assert!(c.in_namespace(&n));
        prop_assert_eq!(serde_json::to_string(&c).unwrap(), serde_json::to_string(&s).unwrap());
        // Parsing the parsed name again is the identity.
        prop_assert_eq!(Channel::parse(c.as_str()).unwrap(), c);
    }

    #[test]
    fn valid_other_names_round_trip(ev in valid_event(), app in valid_app(), ns in valid_namespace()) {
        prop_assert_eq!(EventName::parse(&ev).unwrap().to_string(), ev);
        prop_assert_eq!(AppId::parse(&app).unwrap().to_string(), app);
        prop_assert_eq!(Namespace::parse(&ns).unwrap().to_string(), ns);
    }

    #[test]
    fn a_forbidden_character_anywhere_is_refused(
        ns in valid_namespace(),
        topic in valid_topic(),
        ev in valid_event(),
        app in valid_app(),
        c in forbidden_in_every_name(),
        at in any::<usize>(),
    ) {
        let channel = format!("{ns}#{topic}");
        prop_assert!(Channel::parse(&insert_at(&channel, at, c)).is_err());
        prop_assert!(Namespace::parse(&insert_at(&ns, at, c)).is_err());
        prop_assert!(EventName::parse(&insert_at(&ev, at, c)).is_err());
        prop_assert!(AppId::parse(&insert_at(&app, at, c)).is_err());
        // A second '#' in a channel is refused too (the topic alphabet has none).
        let twice = format!("{channel}#{topic}");
        prop_assert!(Channel::parse(&twice).is_err());
    }

    #[test]
    fn namespace_match_is_exact(ns in valid_namespace(), other in valid_namespace(), topic in valid_topic()) {
        let c = Channel::parse(&format!("{ns}#{topic}")).unwrap();
        let n = Namespace::parse(&other).unwrap();
        prop_assert_eq!(c.in_namespace(&n), ns == other);
    }

    // ---- frames ----

    #[test]
    fn arbitrary_text_never_panics_and_agrees_with_json(text in any::<String>()) {
        check_parse_against_json(&text);
    }

    #[test]
    fn arbitrary_json_values_never_panic(v in arb_json()) {
        check_parse_against_json(&v.to_string());
    }

    #[test]
    fn frames_with_fields_of_any_shape(v in frame_like()) {
        check_parse_against_json(&v.to_string());
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        channel in valid_channel(),
        id in any::<u64>(),
        pos in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let frame = json!({"type":"subscribe","id":id,"channel":channel,"since":{"epoch":"e","offset":3}}).to_string();
        let mut bytes = frame.clone().into_bytes();
        let i = pos % bytes.len();
        bytes[i] = byte;
        if let Ok(text) = std::str::from_utf8(&bytes) {
            check_parse_against_json(text);
        }
        let end = cut % (frame.len() + 1);
        check_parse_against_json(&frame[..end]);
    }

    #[test]
    fn valid_frames_parse_to_what_was_sent(
        channel in valid_channel(),
        id in proptest::option::of(any::<u64>()),
        since in proptest::option::of((any::<String>(), any::<u64>())),
        token in any::<String>(),
    ) {
        let mut f = json!({"type":"subscribe","channel":channel});
        if let Some(id) = id {
            f["id"] = json!(id);
        }
        if let Some((e, o)) = &since {
            f["since"] = json!({"epoch":e,"offset":o});
        }
        let want = ClientFrame::Subscribe {
            id,
            channel: Channel::parse(&channel).unwrap(),
            since: since.map(|(epoch, offset)| Since { epoch, offset }),
        };
        prop_assert_eq!(ClientFrame::parse(&f.to_string()), Ok(want));
        let u = json!({"type":"unsubscribe","channel":channel,"id":id});
        prop_assert_eq!(
            ClientFrame::parse(&u.to_string()),
            Ok(ClientFrame::Unsubscribe { id, channel: Channel::parse(&channel).unwrap() })
        );
        let c = json!({"type":"connect","token":token});
        prop_assert_eq!(ClientFrame::parse(&c.to_string()), Ok(ClientFrame::Connect { token: token.clone() }));
        let r = json!({"type":"refresh","token":token,"id":id});
        prop_assert_eq!(ClientFrame::parse(&r.to_string()), Ok(ClientFrame::Refresh { id, token }));
    }

    #[test]
    fn an_id_that_is_not_an_unsigned_integer_is_a_bad_request_without_id(
        id in prop_oneof![
            (i64::MIN..0).prop_map(Value::from),
            any::<f64>().prop_filter("fractional", |f| f.fract() != 0.0 && f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            Just(json!(true)),
            Just(json!([1])),
            Just(json!({"n":1})),
            Just(Value::from(1e300)),
        ],
        channel in valid_channel(),
    ) {
        let text = json!({"type":"subscribe","id":id,"channel":channel}).to_string();
        prop_assert!(matches!(
            ClientFrame::parse(&text),
            Err(FrameError::BadRequest { id: None, .. })
        ), "{}", text);
    }

    #[test]
    fn long_non_ascii_values_in_wrong_places_are_refused_cleanly(
        ascii in 100usize..200,
        c in prop_oneof![Just('\u{e9}'), Just('\u{20ac}'), Just('\u{1f600}'), any::<char>()],
        n in 1usize..40,
        field in prop_oneof![Just("id"), Just("since"), Just("channel"), Just("token")],
        kind in prop_oneof![Just("connect"), Just("subscribe"), Just("unsubscribe"), Just("refresh")],
    ) {
        // serde's message quotes a string of the wrong type; whatever its length and
        // characters, the refusal must be clean (found by the `frame` fuzz target: the
        // message was cut at byte 160 inside a character, and parse panicked).
        let value = format!("{}{}", "a".repeat(ascii), c.to_string().repeat(n));
        let mut f = json!({"type":kind,"channel":"a#b","token":"t"});
        f[field] = if field == "channel" || field == "token" { json!([value]) } else { json!(value) };
        check_parse_against_json(&f.to_string());
    }

    #[test]
    fn huge_numbers_and_deep_nesting_are_bounded(
        depth in 0usize..4000,
        digits in 1usize..2000,
        open in prop_oneof![Just("["), Just("{\"a\":")],
    ) {
        let close = if open == "[" { "]" } else { "}" };
        let deep = format!(
            "{{\"type\":\"subscribe\",\"channel\":\"a#b\",\"since\":{}1{}}}",
            open.repeat(depth),
            close.repeat(depth)
        );
        check_parse_against_json(&deep);
        let big = format!("{{\"type\":\"subscribe\",\"id\":{},\"channel\":\"a#b\"}}", "9".repeat(digits));
        check_parse_against_json(&big);
        let big_offset = format!(
            "{{\"type\":\"subscribe\",\"channel\":\"a#b\",\"since\":{{\"epoch\":\"e\",\"offset\":{}}}}}",
            "9".repeat(digits)
        );
        check_parse_against_json(&big_offset);
    }
}
