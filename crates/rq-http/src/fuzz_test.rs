//! Property tests for the request-body parser: arbitrary bytes, and JSON of every shape and
//! depth, never panic, and whatever parses is statements whose text came from the body.
//! `PROPTEST_CASES` sets the number of cases (proptest's 256 by default).

use proptest::prelude::*;
use serde_json::Value as Json;

use crate::body;

/// Any JSON value, nested a few levels deep.
fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        any::<String>().prop_map(Json::String),
        Just(Json::String("x'00ff'".into())),
        Just(Json::String("SELECT ?".into())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Json::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("text/plain")),
        Just(Some("text/plain; charset=utf-8")),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_break_the_body_parser(b in prop::collection::vec(any::<u8>(), 0..512), ct in content_type()) {
        let _ = body::parse(&b, ct, true);
        let _ = body::parse(&b, ct, false);
    }

    #[test]
    fn json_of_any_shape_parses_or_is_refused(v in json(), ct in content_type()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(statements) = body::parse(&bytes, ct, false) {
            // Only an array of strings and arrays led by a string is a statement list.
            let Json::Array(elems) = &v else { panic!("{v} parsed") };
            prop_assert_eq!(statements.len(), elems.len());
        }
    }

    #[test]
    fn a_statement_list_survives_truncation_and_corruption(
        v in json(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = serde_json::to_vec(&Json::Array(vec![Json::Array(vec![Json::String("SELECT ?".into()), v])])).unwrap();
        let at = flip.index(bytes.len());
        bytes[at] = byte;
        let _ = body::parse(&bytes, None, false);
        let _ = body::parse(&bytes[..cut.index(bytes.len())], None, false);
    }
}
