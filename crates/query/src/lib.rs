//! CometBFT's event query language, as `tx_search`, `block_search` and `subscribe` take it:
//! conditions joined by `AND`, each a composite key (`type.key`) with `=`, `<`, `<=`, `>`,
//! `>=`, `CONTAINS` or `EXISTS`, and operands that are 'strings', numbers, `DATE 2006-01-02`
//! or `TIME 2006-01-02T15:04:05Z`.
//!
//! Parsing is `tendermint-rpc`'s (the grammar its clients write with); what a query means is
//! ours, after CometBFT's `libs/pubsub/query`: a query matches a set of attributes when every
//! condition holds for at least one value of its key. A number compares with the number an
//! attribute value starts with (`100stake` is 100), exactly, whatever its size; a date or time
//! with an attribute value that parses as one; a string only by `=` and `CONTAINS`.
//!
//! Pure and total: any input gives a [`Query`] or a [`QueryError`].

pub mod search;

use std::cmp::Ordering;
use std::fmt;
use thiserror::Error;
use time::{Date, OffsetDateTime};

/// Why a query was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    /// Not in the grammar.
    #[error("{0}")]
    Syntax(String),
    /// An operator the operand's type has no meaning for (`<` with a string).
    #[error("{key}: {operator} cannot compare a string")]
    Operator {
        /// The condition's key.
        key: String,
        /// The operator.
        operator: &'static str,
    },
    /// Longer than [`MAX_QUERY_BYTES`].
    #[error("a query of {0} bytes is longer than {MAX_QUERY_BYTES}")]
    TooLong(usize),
}

/// The longest query taken (CometBFT has no limit; parsing is linear, this bounds the work).
pub const MAX_QUERY_BYTES: usize = 4096;

/// A non-negative or negative decimal number, compared exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number {
    negative: bool,
    /// Integer digits without leading zeros ("" is zero).
    whole: String,
    /// Fraction digits without trailing zeros.
    fraction: String,
}

impl Number {
    /// Parses `-?digits(.digits)?`.
    pub fn parse(s: &str) -> Option<Number> {
        let (negative, unsigned) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) {
            return None;
        }
        if unsigned.contains('.') && fraction.is_empty() {
            return None;
        }
        let whole = whole.trim_start_matches('0').to_string();
        let fraction = fraction.trim_end_matches('0').to_string();
        let zero = whole.is_empty() && fraction.is_empty();
        Some(Number {
            negative: negative && !zero,
            whole,
            fraction,
        })
    }

    /// The number an attribute value starts with, as CometBFT reads it (`\d+(\.\d+)?`: no
    /// sign, so a negative value never compares).
    pub fn leading(value: &str) -> Option<Number> {
        let whole_len = value.bytes().take_while(u8::is_ascii_digit).count();
        if whole_len == 0 {
            return None;
        }
        let rest = &value[whole_len..];
        let fraction_len = match rest.strip_prefix('.') {
            Some(f) => match f.bytes().take_while(u8::is_ascii_digit).count() {
                0 => 0,
                n => n + 1,
            },
            None => 0,
        };
        Number::parse(&value[..whole_len + fraction_len])
    }

    fn magnitude_cmp(&self, other: &Number) -> Ordering {
        self.whole
            .len()
            .cmp(&other.whole.len())
            .then_with(|| self.whole.cmp(&other.whole))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }

    /// The greatest integer at most this number, saturated to `u64` (0 below zero).
    pub fn floor_u64(&self) -> u64 {
        if self.negative {
            return 0;
        }
        if self.whole.is_empty() {
            return 0;
        }
        self.whole.parse().unwrap_or(u64::MAX)
    }

    /// The least integer at least this number, saturated to `u64` (0 below zero).
    pub fn ceil_u64(&self) -> u64 {
        if self.negative {
            return 0;
        }
        let floor = self.floor_u64();
        if self.fraction.is_empty() {
            floor
        } else {
            floor.saturating_add(1)
        }
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.magnitude_cmp(other),
            (true, true) => other.magnitude_cmp(self),
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a condition compares with.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A quoted string.
    String(String),
    /// A number.
    Number(Number),
    /// `DATE yyyy-mm-dd`.
    Date(Date),
    /// `TIME` in RFC 3339.
    Time(OffsetDateTime),
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// `=`.
    Eq,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl Comparison {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Eq => ordering == Ordering::Equal,
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Le => ordering != Ordering::Greater,
            Comparison::Gt => ordering == Ordering::Greater,
            Comparison::Ge => ordering != Ordering::Less,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// What a condition asks of its key's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    /// Compare with an operand.
    Compare(Comparison, Operand),
    /// `CONTAINS 'substring'`.
    Contains(String),
    /// `EXISTS`: any value.
    Exists,
}

/// One condition of a query.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The composite key (`type.key`, or `tm.event`, `tx.height`, ...).
    pub key: String,
    /// What its value must satisfy.
    pub test: Test,
}

impl Condition {
    /// Whether `value`, one value of the key, satisfies the condition.
    pub fn holds(&self, value: &str) -> bool {
        match &self.test {
            Test::Exists => true,
            Test::Contains(s) => value.contains(s.as_str()),
            Test::Compare(c, Operand::String(s)) => *c == Comparison::Eq && value == s,
            Test::Compare(c, Operand::Number(n)) => {
                Number::leading(value).is_some_and(|v| c.holds(v.cmp(n)))
            }
            Test::Compare(c, Operand::Date(d)) => {
                let format = time::macros::format_description!("[year]-[month]-[day]");
                Date::parse(value, &format).is_ok_and(|v| c.holds(v.cmp(d)))
            }
            Test::Compare(c, Operand::Time(t)) => {
                OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|v| c.holds(v.cmp(t)))
            }
        }
    }
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    text: String,
    conditions: Vec<Condition>,
}

fn convert(c: tendermint_rpc::query::Condition) -> Result<Condition, QueryError> {
    use tendermint_rpc::query::{Operand as O, Operation};
    let number = |text: String| Number::parse(&text).map_or(Operand::String(text), Operand::Number);
    let operand = |o: O| match o {
        O::String(s) => Operand::String(s),
        O::Signed(i) => number(i.to_string()),
        O::Unsigned(u) => number(u.to_string()),
        // Rust prints an f64 in full decimal digits (never an exponent).
        O::Float(f) => number(format!("{f}")),
        O::Date(d) => Operand::Date(d),
        O::DateTime(t) => Operand::Time(t),
    };
    let (comparison, o) = match c.operation {
        Operation::Exists => {
            return Ok(Condition {
                key: c.key,
                test: Test::Exists,
            })
        }
        Operation::Contains(s) => {
            return Ok(Condition {
                key: c.key,
                test: Test::Contains(s),
            })
        }
        Operation::Eq(o) => (Comparison::Eq, o),
        Operation::Lt(o) => (Comparison::Lt, o),
        Operation::Lte(o) => (Comparison::Le, o),
        Operation::Gt(o) => (Comparison::Gt, o),
        Operation::Gte(o) => (Comparison::Ge, o),
    };
    let operand = operand(o);
    if matches!(operand, Operand::String(_)) && comparison != Comparison::Eq {
        return Err(QueryError::Operator {
            key: c.key,
            operator: comparison.symbol(),
        });
    }
    Ok(Condition {
        key: c.key,
        test: Test::Compare(comparison, operand),
    })
}

impl Query {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong(text.len()));
        }
        let text = text.trim();
        let parsed: tendermint_rpc::query::Query = text
            .parse()
            .map_err(|e: tendermint_rpc::Error| QueryError::Syntax(e.detail().to_string()))?;
        let mut conditions = Vec::with_capacity(parsed.conditions.len() + 1);
        if let Some(event) = parsed.event_type {
            conditions.push(Condition {
                key: EVENT_KEY.into(),
                test: Test::Compare(Comparison::Eq, Operand::String(event.to_string())),
            });
        }
        for c in parsed.conditions {
            conditions.push(convert(c)?);
        }
        Ok(Query {
            text: text.to_string(),
            conditions,
        })
    }

    /// Its conditions, in the order written.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Whether every condition holds for some value of its key in `attributes` (composite
    /// key, value).
    pub fn matches<K: AsRef<str>, V: AsRef<str>>(&self, attributes: &[(K, V)]) -> bool {
        self.conditions.iter().all(|c| {
            attributes
                .iter()
                .any(|(k, v)| k.as_ref() == c.key && c.holds(v.as_ref()))
        })
    }

    /// The integers `key` may take under this query's numeric conditions on it, as an
    /// inclusive range (`None`: none can).
    pub fn integer_range(&self, key: &str) -> Option<(u64, u64)> {
        let (mut low, mut high) = (0u64, u64::MAX);
        for c in self.conditions.iter().filter(|c| c.key == key) {
            let Test::Compare(comparison, Operand::Number(n)) = &c.test else {
                continue;
            };
            let below_zero = n.negative;
            match comparison {
                Comparison::Eq if !n.fraction.is_empty() || below_zero => return None,
                Comparison::Eq => {
                    low = low.max(n.floor_u64());
                    high = high.min(n.floor_u64());
                }
                Comparison::Ge => low = low.max(n.ceil_u64()),
                Comparison::Gt if below_zero => {}
                Comparison::Gt => low = low.max(n.floor_u64().saturating_add(1)),
                Comparison::Le if below_zero => return None,
                Comparison::Le => high = high.min(n.floor_u64()),
                Comparison::Lt if below_zero => return None,
                Comparison::Lt => match n.ceil_u64().checked_sub(1) {
                    Some(h) => high = high.min(h),
                    None => return None,
                },
            }
        }
        (low <= high).then_some((low, high))
    }

    /// The string `key` must equal, if a condition says so.
    pub fn equal_string(&self, key: &str) -> Option<&str> {
        self.conditions.iter().find_map(|c| match &c.test {
            Test::Compare(Comparison::Eq, Operand::String(s)) if c.key == key => Some(s.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The key every event carries with its kind (`NewBlock`, `Tx`, ...).
pub const EVENT_KEY: &str = "tm.event";
