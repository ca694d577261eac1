//! Autofill (product.md §5): a key's `options.writes.autofill` merged into every event written
//! with it.
//!
//! Deep merge: objects merge recursively; on any other conflict the autofill value wins, because
//! autofill is how a customer stops one tenant from writing as another. `keen.addons` is the one
//! exception: the autofill's add-ons run after the event's own, so the arrays are concatenated.
//! An event whose own `keen.addons` is not an array keeps it, so that the add-on stage rejects
//! it rather than having the mistake silently papered over.

use crate::event::EventObject;
use crate::keen::KEEN;
use serde_json::Value;

/// Merges `autofill` into `event`.
pub fn merge(event: &mut EventObject, autofill: &EventObject) {
    merge_objects(event, autofill, true);
}

/// The part of an autofill that must still hold after the add-ons ran: everything outside
/// `keen`, with its placeholders resolved as the event's were. Add-ons run after autofill (so
/// that autofill may configure them), and an add-on's `output` or `remove_ip_property` would
/// otherwise overwrite or delete an autofilled path: the one guard a customer has against a
/// sub-tenant writing as another (product.md §5).
pub fn guard(autofill: &EventObject, resolve: impl FnOnce(&mut EventObject)) -> EventObject {
    let mut guard: EventObject = autofill
        .iter()
        .filter(|(name, _)| name.as_str() != KEEN)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    resolve(&mut guard);
    guard
}

/// Merges a [`guard`] back into the event after the add-ons: autofilled paths win again.
pub fn reassert(event: &mut EventObject, guard: &EventObject) {
    merge_objects(event, guard, false);
}

fn merge_objects(target: &mut EventObject, autofill: &EventObject, top_level: bool) {
    for (name, fill) in autofill {
        let in_keen = top_level && name == KEEN;
        match (target.get_mut(name), fill) {
            (Some(Value::Object(existing)), Value::Object(fill_map)) => {
                if in_keen {
                    merge_keen(existing, fill_map);
                } else {
                    merge_objects(existing, fill_map, false);
                }
            }
            _ => {
                target.insert(name.clone(), fill.clone());
            }
        }
    }
}

fn merge_keen(keen: &mut EventObject, fill: &EventObject) {
    for (name, value) in fill {
        if name == "addons" {
            match (keen.get_mut("addons"), value) {
                (Some(Value::Array(own)), Value::Array(more)) => own.extend(more.iter().cloned()),
                (Some(_), _) => {} // the event's own malformed addons are reported later
                (None, _) => {
                    keen.insert(name.clone(), value.clone());
                }
            }
            continue;
        }
        match (keen.get_mut(name), value) {
            (Some(Value::Object(existing)), Value::Object(fill_map)) => {
                merge_objects(existing, fill_map, false)
            }
            _ => {
                keen.insert(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(event: Value, autofill: Value) -> Value {
        let (Value::Object(mut event), Value::Object(autofill)) = (event, autofill) else {
            panic!("objects")
        };
        merge(&mut event, &autofill);
        Value::Object(event)
    }

    #[test]
    fn a_guard_restores_autofilled_paths_and_keeps_the_rest() {
        let Value::Object(fill) =
            json!({"user": {"id": "t7"}, "ip": "1.2.3.4", "keen": {"addons": []}})
        else {
            panic!("object")
        };
        let guard = guard(&fill, |g| {
            g.insert("resolved".into(), json!(true));
        });
        assert!(!guard.contains_key("keen"), "keen is the add-ons' own");
        // An add-on wrote over user (output "user") and removed the ip.
        let Value::Object(mut event) = json!({"user": {"family": "Firefox"}, "page": 1}) else {
            panic!("object")
        };
        reassert(&mut event, &guard);
        assert_eq!(
            Value::Object(event),
            json!({"user": {"family": "Firefox", "id": "t7"}, "ip": "1.2.3.4", "page": 1, "resolved": true})
        );
    }

    #[test]
    fn deep_merge_with_autofill_winning() {
        let out = merged(
            json!({"a": 1, "user": {"id": "forged", "name": "n"}, "list": [1], "x": {"y": 1}}),
            json!({"user": {"id": "tenant-7", "tier": "gold"}, "list": [2], "x": 5, "new": {"k": true}}),
        );
        assert_eq!(
            out,
            json!({
                "a": 1,
                "user": {"id": "tenant-7", "name": "n", "tier": "gold"},
                "list": [2],
                "x": 5,
                "new": {"k": true},
            })
        );
    }

    #[test]
    fn addons_are_concatenated_event_first() {
        let own = json!({"name": "keen:url_parser", "input": {"url": "u"}, "output": "a"});
        let fill = json!({"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": "b"});
        let out = merged(
            json!({"keen": {"addons": [own.clone()], "timestamp": "2024-01-01T00:00:00Z"}}),
            json!({"keen": {"addons": [fill.clone()], "timestamp": "2025-01-01T00:00:00Z"}}),
        );
        assert_eq!(out["keen"]["addons"], json!([own, fill]));
        assert_eq!(out["keen"]["timestamp"], "2025-01-01T00:00:00Z");
        let only_fill = merged(json!({"a": 1}), json!({"keen": {"addons": [fill.clone()]}}));
        assert_eq!(only_fill["keen"]["addons"], json!([fill]));
    }

    #[test]
    fn malformed_own_addons_are_kept_for_the_add_on_stage() {
        let out = merged(
            json!({"keen": {"addons": "oops"}}),
            json!({"keen": {"addons": []}}),
        );
        assert_eq!(out["keen"]["addons"], "oops");
    }

    #[test]
    fn a_non_object_keen_is_overwritten_by_an_object_autofill() {
        let out = merged(
            json!({"keen": 3}),
            json!({"keen": {"location": {"coordinates": [0, 0]}}}),
        );
        assert_eq!(out["keen"], json!({"location": {"coordinates": [0, 0]}}));
    }
}
