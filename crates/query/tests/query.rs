//! The query language's meaning, condition by condition, against CometBFT's documented
//! behaviour; numbers against exact integer arithmetic over many drawn values.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_query::{Number, Query, QueryError, MAX_QUERY_BYTES};

fn q(text: &str) -> Query {
    Query::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn matches(text: &str, attributes: &[(&str, &str)]) -> bool {
    q(text).matches(attributes)
}

#[test]
fn every_condition_must_hold_for_some_value_of_its_key() {
    let tx = [
        ("app.creator", "Cosmoshi Netowoko"),
        ("app.creator", "Cosmoshi"),
        ("app.key", "tx0"),
        ("tx.height", "243"),
        ("tm.event", "Tx"),
    ];
    assert!(matches("tm.event = 'Tx'", &tx));
    assert!(
        matches("app.creator = 'Cosmoshi'", &tx),
        "the second value counts"
    );
    assert!(matches("app.creator = 'Cosmoshi' AND app.key = 'tx0'", &tx));
    assert!(!matches(
        "app.creator = 'Cosmoshi' AND app.key = 'tx1'",
        &tx
    ));
    assert!(!matches("app.creator = 'Cosmo'", &tx), "= is whole-string");
    assert!(matches("app.creator CONTAINS 'Netow'", &tx));
    assert!(
        !matches("app.creator CONTAINS 'netow'", &tx),
        "CONTAINS is case-sensitive"
    );
    assert!(matches("app.key EXISTS", &tx));
    assert!(!matches("app.value EXISTS", &tx));
    assert!(matches("tx.height >= 243 AND tx.height < 244", &tx));
    assert!(!matches("tm.event = 'NewBlock'", &tx));
    assert!(matches("", &tx), "the empty query matches everything");
}

#[test]
fn a_number_compares_with_the_number_a_value_starts_with() {
    let coins = [("transfer.amount", "100stake")];
    assert!(matches("transfer.amount = 100", &coins));
    assert!(matches("transfer.amount > 99.5", &coins));
    assert!(matches("transfer.amount <= 100.0", &coins));
    assert!(!matches("transfer.amount < 100", &coins));
    assert!(!matches(
        "transfer.amount = 100",
        &[("transfer.amount", "stake100")]
    ));
    assert!(
        !matches("x.n < 0", &[("x.n", "-5")]),
        "a sign is not read (CometBFT's values are unsigned)"
    );
    assert!(matches("x.n > -1", &[("x.n", "0")]));
    assert!(matches("x.n = 1.5", &[("x.n", "1.50")]));
    assert!(matches("x.n = 7", &[("x.n", "007")]));
    // Values beyond 64 bits compare exactly (tendermint-rpc's grammar takes operands up to
    // u64::MAX).
    assert!(matches(
        "x.n > 18446744073709551615",
        &[("x.n", "18446744073709551616")]
    ));
    assert!(!matches(
        "x.n > 18446744073709551615",
        &[("x.n", "18446744073709551615.0")]
    ));
    assert!(Query::parse("x.n > 18446744073709551616").is_err());
}

#[test]
fn dates_and_times_compare_with_values_that_parse_as_such() {
    let a = [
        ("account.created", "2023-05-17"),
        ("block.time", "2023-05-17T14:14:43Z"),
    ];
    assert!(matches("account.created = DATE 2023-05-17", &a));
    assert!(matches("account.created < DATE 2023-05-18", &a));
    assert!(!matches("account.created > DATE 2023-05-17", &a));
    assert!(matches("block.time >= TIME 2023-05-17T14:14:43Z", &a));
    assert!(!matches("block.time > TIME 2023-05-17T14:14:43Z", &a));
    assert!(!matches(
        "account.created = DATE 2023-05-17",
        &[("account.created", "yesterday")]
    ));
}

#[test]
fn bad_queries_are_typed_errors() {
    assert!(matches!(
        Query::parse("tx.height"),
        Err(QueryError::Syntax(_))
    ));
    assert!(matches!(
        Query::parse("tx.height = "),
        Err(QueryError::Syntax(_))
    ));
    assert!(matches!(
        Query::parse("a.b = 'x' OR c.d = 'y'"),
        Err(QueryError::Syntax(_))
    ));
    assert!(matches!(
        Query::parse("tm.event = 'Tx' AND tm.event = 'NewBlock'"),
        Err(QueryError::Syntax(_))
    ));
    assert_eq!(
        Query::parse("app.creator < 'Cosmoshi'"),
        Err(QueryError::Operator {
            key: "app.creator".into(),
            operator: "<"
        })
    );
    let long = format!("a.b = '{}'", "x".repeat(MAX_QUERY_BYTES));
    assert!(matches!(Query::parse(&long), Err(QueryError::TooLong(_))));
    for garbage in [
        "'",
        "= 5",
        "a.b = 'unterminated",
        "\u{0}",
        "a.b EXISTS AND",
        "a.b <> 5",
    ] {
        assert!(Query::parse(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn event_kinds_other_than_the_clients_two_are_conditions_on_tm_event() {
    let header = q("tm.event = 'NewBlockHeader'");
    assert!(header.matches(&[("tm.event", "NewBlockHeader")]));
    assert!(!header.matches(&[("tm.event", "NewBlock")]));
    assert_eq!(q("tm.event='Tx'").equal_string("tm.event"), Some("Tx"));
}

#[test]
fn height_conditions_narrow_to_an_integer_range() {
    let range = |text: &str| q(text).integer_range("tx.height");
    assert_eq!(range("tx.height >= 5 AND tx.height < 10"), Some((5, 9)));
    assert_eq!(range("tx.height > 4.5 AND tx.height <= 9.9"), Some((5, 9)));
    assert_eq!(range("tx.height >= 4.5 AND tx.height < 9.5"), Some((5, 9)));
    assert_eq!(range("tx.height = 7"), Some((7, 7)));
    assert_eq!(range("tx.height = 7 AND tx.height > 7"), None);
    assert_eq!(range("tx.height = 7.5"), None);
    assert_eq!(range("tx.height < 0"), None);
    assert_eq!(range("tx.height <= -1"), None);
    assert_eq!(range("tx.height > -3"), Some((0, u64::MAX)));
    assert_eq!(range("app.key = 'x'"), Some((0, u64::MAX)));
    assert_eq!(range("tx.height < 1"), Some((0, 0)));
}

/// Numbers order exactly as the integers and halves they spell, over many drawn pairs.
#[test]
fn numbers_order_as_exact_arithmetic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut draw = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        // Values in half units, signed, over a range that crosses digit counts.
        let a = (draw() % 4001) as i64 - 2000;
        let b = (draw() % 4001) as i64 - 2000;
        // Values carry leading or trailing zeros; the grammar takes operands without.
        let spell = |halves: i64, padded: bool| {
            let sign = if halves < 0 { "-" } else { "" };
            let m = halves.unsigned_abs();
            let zeros = if padded {
                "0".repeat((m % 3) as usize)
            } else {
                String::new()
            };
            match m % 2 {
                0 => format!("{sign}{zeros}{}", m / 2),
                _ => format!("{sign}{}.5{zeros}", m / 2),
            }
        };
        let text = format!("x.n < {}", spell(b, false));
        let query = Query::parse(&text).unwrap();
        let value = spell(a, true);
        let expected = a >= 0 && a < b;
        assert_eq!(
            query.matches(&[("x.n", value.as_str())]),
            expected,
            "{value} against {text}"
        );
        if a >= 0 {
            let n = Number::leading(&value).unwrap();
            assert_eq!(n.floor_u64(), (a / 2) as u64, "{value}");
            assert_eq!(n.ceil_u64(), ((a + 1) / 2) as u64, "{value}");
        }
    }
}

#[test]
fn pages_are_cometbfts_with_its_out_of_range_error() {
    use bulwark_query::search::{page_of, SearchError};
    let found: Vec<u32> = (1..=25).collect();
    assert_eq!(
        page_of(&found, 1, 10, false).unwrap(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        page_of(&found, 3, 10, false).unwrap(),
        (21..=25).collect::<Vec<_>>()
    );
    assert_eq!(
        page_of(&found, 1, 10, true).unwrap(),
        (16..=25).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        page_of(&found, 3, 10, true).unwrap(),
        (1..=5).rev().collect::<Vec<_>>()
    );
    assert!(matches!(
        page_of(&found, 4, 10, false),
        Err(SearchError::Page { pages: 3, page: 4 })
    ));
    assert!(matches!(
        page_of(&found, 0, 10, false),
        Err(SearchError::Page { .. })
    ));
    let none: Vec<u32> = Vec::new();
    assert!(
        page_of(&none, 1, 30, false).unwrap().is_empty(),
        "page 1 of nothing is empty"
    );
    assert!(page_of(&none, 2, 30, false).is_err());
    assert_eq!(
        SearchError::Page { pages: 3, page: 4 }.to_string(),
        "page should be within [1, 3] range, given 4"
    );
}

#[test]
fn negative_numbers_order_below_zero_and_by_magnitude_reversed() {
    let n = |s: &str| Number::parse(s).unwrap();
    assert!(n("-2") < n("-1.5"));
    assert!(n("-1.5") < n("-1"));
    assert!(n("-1") < n("0"));
    assert_eq!(n("-0"), n("0"));
    assert_eq!(n("-0.0"), n("0"));
    assert!(n("-10") < n("-9"));
    for bad in ["", "-", "1.", ".5", "1e3", "--1", "0x10", " 1"] {
        assert_eq!(Number::parse(bad), None, "{bad:?}");
    }
}
