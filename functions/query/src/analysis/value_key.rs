//! A property value as a key: what `group_by` groups on, what `count_unique` and
//! `select_unique` count, and what a funnel's actors are.
//!
//! JSON values have no order of their own; keys order as `null < false < true < numbers <
//! strings < arrays and objects`, numbers by value (so `1` and `1.0` are one key, as they are one
//! number), composite values by their canonical JSON text (object members sorted by name). This
//! is the order `select_unique` answers in and `group_by` rows come in.

use serde_json::{Number, Value};
use std::cmp::Ordering;

/// A property value (or its absence, which is `null`), ordered and comparable.
#[derive(Debug, Clone)]
pub enum ValueKey {
    Null,
    Bool(bool),
    /// Finite (JSON has no NaN or infinity); `-0` is stored as `0`.
    Number(f64),
    String(String),
    /// An array or an object, as canonical JSON.
    Composite(String),
}

impl ValueKey {
    /// The key of a looked-up property: absent and `null` are the same key, as Keen groups
    /// events missing the property under `null`.
    pub fn of(value: Option<&Value>) -> ValueKey {
        match value {
            None | Some(Value::Null) => ValueKey::Null,
            Some(Value::Bool(b)) => ValueKey::Bool(*b),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(0.0);
                ValueKey::Number(if x == 0.0 { 0.0 } else { x })
            }
            Some(Value::String(s)) => ValueKey::String(s.clone()),
            // serde_json's map sorts members by name, so this text is canonical.
            Some(composite) => ValueKey::Composite(composite.to_string()),
        }
    }

    /// The value as JSON: whole numbers within ±2^53 as integers.
    pub fn to_json(&self) -> Value {
        match self {
            ValueKey::Null => Value::Null,
            ValueKey::Bool(b) => Value::Bool(*b),
            ValueKey::Number(x) => number(*x),
            ValueKey::String(s) => Value::String(s.clone()),
            ValueKey::Composite(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        }
    }

    /// Roughly the bytes this key holds, for memory bounds.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<ValueKey>()
            + match self {
                ValueKey::String(s) | ValueKey::Composite(s) => s.len(),
                _ => 0,
            }
    }

    const fn rank(&self) -> u8 {
        match self {
            ValueKey::Null => 0,
            ValueKey::Bool(_) => 1,
            ValueKey::Number(_) => 2,
            ValueKey::String(_) => 3,
            ValueKey::Composite(_) => 4,
        }
    }
}

/// A finite number as JSON: whole numbers within ±2^53 as integers (`30`, not `30.0`), others
/// as floats; a non-finite one (an overflowing sum) as `null`.
pub fn number(x: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if x.fract() == 0.0 && x.abs() <= EXACT {
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        return Value::Number(Number::from(x as i64));
    }
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

impl PartialEq for ValueKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ValueKey {}

impl PartialOrd for ValueKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ValueKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (ValueKey::Bool(a), ValueKey::Bool(b)) => a.cmp(b),
            (ValueKey::Number(a), ValueKey::Number(b)) => a.total_cmp(b),
            (ValueKey::String(a), ValueKey::String(b))
            | (ValueKey::Composite(a), ValueKey::Composite(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl std::hash::Hash for ValueKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            ValueKey::Null => {}
            ValueKey::Bool(b) => b.hash(state),
            ValueKey::Number(x) => x.to_bits().hash(state),
            ValueKey::String(s) | ValueKey::Composite(s) => s.hash(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    #[test]
    fn keys_order_by_type_then_value() {
        let values = [
            json!("b"),
            json!(10),
            json!([1, 2]),
            json!(null),
            json!(2.5),
            json!(true),
            json!("a"),
            json!(false),
            json!({"b": 1, "a": 2}),
            json!(-3),
        ];
        let set: BTreeSet<ValueKey> = values.iter().map(|v| ValueKey::of(Some(v))).collect();
        let sorted: Vec<Value> = set.iter().map(ValueKey::to_json).collect();
        assert_eq!(
            sorted,
            vec![
                json!(null),
                json!(false),
                json!(true),
                json!(-3),
                json!(2.5),
                json!(10),
                json!("a"),
                json!("b"),
                json!([1, 2]),
                json!({"a": 2, "b": 1}),
            ]
        );
    }

    #[test]
    fn equal_numbers_and_missing_values_are_one_key() {
        assert_eq!(
            ValueKey::of(Some(&json!(1))),
            ValueKey::of(Some(&json!(1.0)))
        );
        assert_eq!(
            ValueKey::of(Some(&json!(-0.0))),
            ValueKey::of(Some(&json!(0)))
        );
        assert_eq!(ValueKey::of(None), ValueKey::of(Some(&json!(null))));
        assert_ne!(
            ValueKey::of(Some(&json!("1"))),
            ValueKey::of(Some(&json!(1)))
        );
        assert_eq!(ValueKey::of(Some(&json!(1.0))).to_json(), json!(1));
        assert_eq!(number(0.1 + 0.2), json!(0.1 + 0.2));
        assert_eq!(number(f64::INFINITY), json!(null));
        assert_eq!(number(1e300), json!(1e300));
    }
}
