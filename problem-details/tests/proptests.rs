//! Property tests: round trips, and the parser's tolerance of anything.

use http::StatusCode;
use proptest::prelude::*;
use serde_json::{Map, Value};
use tower_problem_details::{Problem, UriRef};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,6}", inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn uri_ref() -> impl Strategy<Value = UriRef> {
    prop_oneof![
        // No `//` after the scheme: an authority has rules (a numeric port) of its own.
        "(https|urn|tag):[a-z0-9][a-z0-9./:@-]{0,20}(#[a-z0-9-]{0,8})?",
        "https://[a-z0-9.-]{1,12}(:[0-9]{1,4})?(/[a-z0-9/_-]{0,12})?(#[a-z0-9-]{0,8})?",
        "/([a-z0-9][a-z0-9/_-]{0,20})?(\\?[a-z=&]{0,8})?(#[a-z0-9-]{0,8})?",
    ]
    .prop_map(|s| UriRef::try_from(s).expect("the strategy makes URI references"))
}

fn extension_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_-]{0,10}".prop_filter("not a standard member", |n| {
        !["type", "title", "status", "detail", "instance"].contains(&n.as_str())
    })
}

prop_compose! {
    fn problem()(
        status in 100u16..=599,
        problem_type in prop::option::of(uri_ref()),
        title in prop::option::of(".{0,30}"),
        detail in prop::option::of(".{0,60}"),
        instance in prop::option::of(uri_ref()),
        extensions in prop::collection::vec((extension_name(), json_value()), 0..5),
    ) -> Problem {
        let mut p = Problem::new(StatusCode::from_u16(status).expect("in range")).without_title();
        if let Some(t) = problem_type { p = p.with_type(t); }
        if let Some(t) = title { p = p.with_title(t); }
        if let Some(d) = detail { p = p.with_detail(d); }
        if let Some(i) = instance { p = p.with_instance(i); }
        for (name, value) in extensions {
            p = p.with_extension(name, value).expect("not a standard member");
        }
        p
    }
}

/// A JSON value of a type that no standard member accepts: never a string.
fn not_a_string() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not a string", |v| !v.is_string())
}

/// A value that is not a usable status: not an integer in 100..=599.
fn not_a_status() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value().prop_filter("not a number", |v| !v.is_number()),
        (600u64..).prop_map(Value::from),
        (0u64..100).prop_map(Value::from),
        (i64::MIN..0).prop_map(Value::from),
        "[0-9]{3}".prop_map(Value::from),
    ]
}

/// The problem with its extensions sorted by name.
fn sorted(p: &Problem) -> Problem {
    let mut extensions: Vec<(String, Value)> = p
        .extensions()
        .map(|(n, v)| (n.to_owned(), v.clone()))
        .collect();
    extensions.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = p.clone();
    for (name, _) in &extensions {
        out.remove_extension(name);
    }
    for (name, value) in extensions {
        out = out.with_extension(name, value).expect("extension name");
    }
    out
}

proptest! {
    #[test]
    fn prop_serialize_then_parse_gives_back_the_same_problem(p in problem()) {
        let parsed = Problem::from_json(&p.to_json_vec()).expect("own output parses");
        prop_assert_eq!(parsed, p);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Problem::from_json(&bytes);
        let _ = Problem::from_json_with_status(&bytes, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn prop_arbitrary_json_never_panics_the_parser(value in json_value()) {
        let text = value.to_string();
        let _ = Problem::from_json(text.as_bytes());
        let parsed = Problem::from_json_with_status(text.as_bytes(), StatusCode::BAD_REQUEST);
        prop_assert_eq!(parsed.is_ok(), value.is_object());
    }

    #[test]
    fn prop_wrong_typed_standard_members_are_dropped_and_the_rest_kept(
        p in problem(),
        bad_type in prop::option::of(not_a_string()),
        bad_title in prop::option::of(not_a_string()),
        bad_status in prop::option::of(not_a_status()),
        bad_detail in prop::option::of(not_a_string()),
        bad_instance in prop::option::of(not_a_string()),
    ) {
        let mut doc: Map<String, Value> = match serde_json::from_slice(&p.to_json_vec()) {
            Ok(Value::Object(map)) => map,
            other => panic!("own output is an object: {other:?}"),
        };
        let fallback = StatusCode::IM_A_TEAPOT;
        let mut expected = p.clone();
        for (name, bad) in [("type", &bad_type), ("title", &bad_title), ("detail", &bad_detail), ("instance", &bad_instance), ("status", &bad_status)] {
            if let Some(bad) = bad {
                doc.insert(name.to_owned(), bad.clone());
            }
        }
        if bad_type.is_some() { expected = expected.with_type(UriRef::ABOUT_BLANK); }
        // Rebuild the optional members the document lost.
        let mut rebuilt = Problem::new(if bad_status.is_some() { fallback } else { p.status() }).without_title()
            .with_type(expected.problem_type().clone());
        if bad_title.is_none() && let Some(t) = p.title() { rebuilt = rebuilt.with_title(t.to_owned()); }
        if bad_detail.is_none() && let Some(d) = p.detail() { rebuilt = rebuilt.with_detail(d.to_owned()); }
        if bad_instance.is_none() && let Some(i) = p.instance() { rebuilt = rebuilt.with_instance(i.clone()); }
        for (name, value) in p.extensions() {
            rebuilt = rebuilt.with_extension(name.to_owned(), value.clone()).expect("extension name");
        }
        let parsed = Problem::from_json_with_status(Value::Object(doc).to_string().as_bytes(), fallback)
            .expect("an object always parses with a fallback status");
        // The document went through a `serde_json::Map`, which sorts members, so extension
        // order is not compared here (the round-trip property covers it).
        prop_assert_eq!(sorted(&parsed), sorted(&rebuilt));
    }
}
