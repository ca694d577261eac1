//! Funnels (product.md §9): steps, and how actors pass from one to the next.
//!
//! The engine parses `steps` with [`parse_steps`], builds a [`Funnel`], ANDs the key's filters
//! onto every step ([`Funnel::and_key_filters`]), reads each step's events in
//! [`Funnel::step_window`], collects each step's actors ([`Step::actor_of`], [`add_actor`]) and
//! hands the sets to [`evaluate`], whose value is the response body.
//!
//! Semantics (Keen documents that "funnels do not enforce the order of the steps"; the rest is
//! decided here where its docs are silent):
//! - an actor is a value of the step's `actor_property`; an event without it, or with `null`,
//!   belongs to no actor and is skipped. Numbers compare by value ([`ValueKey`]), so `1` and
//!   `1.0` are one actor; arrays and objects are actors too, compared as canonical JSON;
//! - step 1 passes every actor who did it; its result is how many;
//! - a later step's candidates are the actors who passed the most recent step before it that is
//!   not optional. A normal step passes the candidates who did it, an inverted step the
//!   candidates who did NOT do it; its result is how many it passes. Timing between steps does
//!   not matter: only each step's own window;
//! - an optional step is counted the same way, but later steps ignore it: they take their
//!   candidates from before it;
//! - the first step can be neither optional nor inverted: it defines the actors the funnel
//!   follows, and has no candidates to leave out.
//!
//! The answer echoes each step with every field filled: `timeframe`, `timezone` and `filters` as
//! the request gave them (kept in [`StepGiven`]; `null`, `null` and `[]` when absent), so an
//! access key's filters ANDed onto the steps are never shown back.

use super::filter::lookup;
use super::value_key::ValueKey;
use super::{Filters, QueryError, Timeframe, Timezone, Window};
use keen_shared::collection;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// Steps in one funnel, at most: each is a full read of its collection.
pub const MAX_STEPS: usize = 20;
/// Distinct actors one step may hold before the engine answers [`too_many_actors`].
pub const MAX_ACTORS: usize = 1_000_000;

/// The fields a step may have.
const STEP_FIELDS: [&str; 8] = [
    "event_collection",
    "actor_property",
    "timeframe",
    "timezone",
    "filters",
    "optional",
    "inverted",
    "with_actors",
];

/// One funnel step, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Valid per product.md §2.
    pub event_collection: String,
    /// Dotted path of the property naming the actor, e.g. `user.id`.
    pub actor_property: String,
    /// `None`: the funnel's timeframe.
    pub timeframe: Option<Timeframe>,
    /// `None`: the funnel's timezone.
    pub timezone: Option<Timezone>,
    /// The step's filters, and the key's once [`Funnel::and_key_filters`] ran.
    pub filters: Filters,
    /// Counted, but does not narrow later steps.
    pub optional: bool,
    /// Passes the candidates who did NOT do the step.
    pub inverted: bool,
    /// The answer lists the actors this step passes.
    pub with_actors: bool,
    /// The request's own JSON, echoed in the answer.
    pub given: StepGiven,
}

/// What the request gave for a step's structured fields, exactly, for the echo.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepGiven {
    /// A string, a `{"start", "end"}` object, or `null` when absent.
    pub timeframe: Value,
    /// A number, a string, or `null` when absent.
    pub timezone: Value,
    /// The request's filter array, `[]` when absent (never the key's filters).
    pub filters: Vec<Value>,
}

impl Step {
    /// The actor an event counts for in this step: `None` when the event fails the step's
    /// filters or has no `actor_property` (absent or `null`). The window is the engine's to
    /// check, as it reads by window.
    pub fn actor_of(&self, event: &Value) -> Option<ValueKey> {
        if !self.filters.matches(event) {
            return None;
        }
        match lookup(event, &self.actor_property) {
            None | Some(Value::Null) => None,
            found => Some(ValueKey::of(found)),
        }
    }

    /// The step as the answer echoes it, every field filled.
    pub fn echo(&self) -> Value {
        json!({
            "event_collection": self.event_collection,
            "actor_property": self.actor_property,
            "timeframe": self.given.timeframe,
            "timezone": self.given.timezone,
            "filters": self.given.filters,
            "optional": self.optional,
            "inverted": self.inverted,
            "with_actors": self.with_actors,
        })
    }
}

/// A funnel: its steps and the defaults they fall back on.
#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    /// 1 to [`MAX_STEPS`], the first neither optional nor inverted ([`parse_steps`]).
    pub steps: Vec<Step>,
    /// The request's top-level `timeframe`; `None`: all time for steps without their own.
    pub timeframe: Option<Timeframe>,
    /// The request's top-level `timezone` (UTC by default).
    pub timezone: Timezone,
}

impl Funnel {
    /// The window of step `index` at `now_ms`: the step's timeframe, else the funnel's, aligned
    /// in the step's timezone, else the funnel's; all time without any timeframe.
    ///
    /// # Panics
    /// When `index` is not a step of the funnel (a bug in the caller).
    pub fn step_window(&self, index: usize, now_ms: i64) -> Window {
        let step = &self.steps[index];
        let timezone = step.timezone.as_ref().unwrap_or(&self.timezone);
        step.timeframe
            .as_ref()
            .or(self.timeframe.as_ref())
            .map_or(Window::ALL_TIME, |t| t.resolve(now_ms, timezone))
    }

    /// ANDs an access key's `queries.filters` onto every step (product.md §9), so a key scoped
    /// to one tenant never follows another's actors through any step.
    pub fn and_key_filters(&mut self, key_filters: &Filters) {
        for step in &mut self.steps {
            step.filters = std::mem::take(&mut step.filters).and(key_filters.clone());
        }
    }

    /// Whether any step asks for its actors.
    pub fn with_actors(&self) -> bool {
        self.steps.iter().any(|s| s.with_actors)
    }
}

/// Adds an actor to step `step`'s set, refusing the query once the set passes [`MAX_ACTORS`].
pub fn add_actor(
    actors: &mut BTreeSet<ValueKey>,
    actor: ValueKey,
    step: usize,
) -> Result<(), QueryError> {
    if actors.insert(actor) && actors.len() > MAX_ACTORS {
        return Err(too_many_actors(step));
    }
    Ok(())
}

/// The refusal of a step holding more than [`MAX_ACTORS`] actors, saying how to narrow it.
pub fn too_many_actors(step: usize) -> QueryError {
    QueryError::QueryTooLarge(format!(
        "steps[{step}] has more than {MAX_ACTORS} distinct actors, more than a funnel can \
         follow; narrow it with a shorter timeframe (on the step or the funnel) or with filters \
         on the step"
    ))
}

/// Parses the `steps` parameter: a JSON array of step objects, or a JSON string holding that
/// array (GET clients JSON-encode it). Rules in the module docs; errors name the step.
pub fn parse_steps(value: &Value) -> Result<Vec<Step>, QueryError> {
    let decoded;
    let items = match value {
        Value::Array(items) => items,
        Value::String(text) if is_blank(text) => return Err(missing_steps()),
        Value::String(text) => {
            decoded = serde_json::from_str::<Value>(text).map_err(|e| {
                QueryError::InvalidParameter(format!(
                    "steps is not valid JSON ({e}); give a JSON array of step objects"
                ))
            })?;
            match &decoded {
                Value::Array(items) => items,
                _ => return Err(not_an_array()),
            }
        }
        Value::Null => return Err(missing_steps()),
        _ => return Err(not_an_array()),
    };
    if items.is_empty() || items.len() > MAX_STEPS {
        return Err(QueryError::InvalidParameter(format!(
            "steps holds {} steps; a funnel has 1 to {MAX_STEPS} steps",
            items.len()
        )));
    }
    let steps = items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_step(item, index))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &steps[0];
    if first.optional {
        return Err(QueryError::InvalidParameter(
            "steps[0] is optional, but the first step cannot be: it defines the actors the \
             funnel follows; make it required (optional: false) or start with another step"
                .into(),
        ));
    }
    if first.inverted {
        return Err(QueryError::InvalidParameter(
            "steps[0] is inverted, but the first step cannot be: an inverted step counts the \
             previous step's actors who did not do it, and the first step has no previous step; \
             set inverted: false or start with another step"
                .into(),
        ));
    }
    Ok(steps)
}

fn missing_steps() -> QueryError {
    QueryError::MissingRequiredProperty(
        "steps is required by funnel: give a JSON array of steps, e.g. [{\"event_collection\": \
         \"signups\", \"actor_property\": \"user.id\"}, {\"event_collection\": \"purchases\", \
         \"actor_property\": \"user.id\"}]"
            .into(),
    )
}

fn not_an_array() -> QueryError {
    QueryError::InvalidParameter(
        "steps is not a JSON array; give [{\"event_collection\": ..., \"actor_property\": ...}, \
         ...]"
            .into(),
    )
}

/// Whether a text counts as absent: blank or JSON `null`, as for any other parameter.
fn is_blank(text: &str) -> bool {
    let trimmed = text.trim();
    trimmed.is_empty() || trimmed == "null"
}

/// One step object; `index` names it in errors.
fn parse_step(item: &Value, index: usize) -> Result<Step, QueryError> {
    let at = format!("steps[{index}]");
    let Value::Object(fields) = item else {
        return Err(QueryError::InvalidParameter(format!(
            "{at} is not an object; each step is {{\"event_collection\": ..., \
             \"actor_property\": ...}}"
        )));
    };
    if let Some(unknown) = fields.keys().find(|k| !STEP_FIELDS.contains(&k.as_str())) {
        return Err(QueryError::InvalidParameter(format!(
            "{at} has an unknown field {unknown:?}; a step has {}",
            STEP_FIELDS.join(", ")
        )));
    }
    let given = |name: &str| fields.get(name).filter(|v| !v.is_null());

    let event_collection = match given("event_collection") {
        Some(Value::String(name)) if !name.is_empty() => {
            collection::check_name(name).map_err(|e| {
                QueryError::InvalidCollectionName(format!("{at}.event_collection {name:?}: {e}"))
            })?;
            name.clone()
        }
        Some(Value::String(_)) | None => {
            return Err(QueryError::MissingRequiredProperty(format!(
                "{at}.event_collection is required: name the collection of the step's events, \
                 e.g. \"event_collection\": \"purchases\""
            )));
        }
        Some(other) => {
            return Err(QueryError::InvalidCollectionName(format!(
                "{at}.event_collection is {other}, not a string; name the collection, e.g. \
                 \"event_collection\": \"purchases\""
            )));
        }
    };

    let actor_property = match given("actor_property") {
        Some(Value::String(path)) if !path.is_empty() => {
            if path.split('.').any(str::is_empty) {
                return Err(QueryError::InvalidParameter(format!(
                    "{at}.actor_property {path:?} is not a dotted path; name the property that \
                     identifies the actor, such as user.id"
                )));
            }
            path.clone()
        }
        Some(Value::String(_)) | None => {
            return Err(QueryError::MissingRequiredProperty(format!(
                "{at}.actor_property is required: name the property that identifies who did \
                 the step, e.g. \"actor_property\": \"user.id\""
            )));
        }
        Some(other) => {
            return Err(QueryError::InvalidParameter(format!(
                "{at}.actor_property is {other}, not a string; give a dotted property path \
                 such as user.id"
            )));
        }
    };

    let (timeframe, given_timeframe) = match given("timeframe") {
        Some(Value::String(text)) if is_blank(text) => (None, Value::Null),
        Some(given @ Value::String(text)) => (
            Some(Timeframe::parse(text).map_err(|e| within(e, &at))?),
            given.clone(),
        ),
        Some(given @ Value::Object(_)) => (
            Some(Timeframe::parse(&given.to_string()).map_err(|e| within(e, &at))?),
            given.clone(),
        ),
        None => (None, Value::Null),
        Some(other) => {
            return Err(QueryError::TimeframeDefinition(format!(
                "{at}.timeframe is {other}; give a relative timeframe such as \"this_7_days\" \
                 or an absolute one {{\"start\": \"2024-03-01T00:00:00Z\", \"end\": \
                 \"2024-03-08T00:00:00Z\"}}"
            )));
        }
    };

    let (timezone, given_timezone) = match given("timezone") {
        Some(Value::String(text)) if is_blank(text) => (None, Value::Null),
        Some(given @ Value::String(text)) => (
            Some(Timezone::parse(text).map_err(|e| within(e, &at))?),
            given.clone(),
        ),
        Some(given @ Value::Number(seconds)) => {
            if !(seconds.is_i64() || seconds.is_u64()) {
                return Err(QueryError::InvalidParameter(format!(
                    "{at}.timezone {seconds} is not a whole number of seconds; give the offset \
                     east of UTC in seconds (e.g. -28800) or an IANA zone name (e.g. \
                     Europe/Berlin)"
                )));
            }
            (
                Some(Timezone::parse(&seconds.to_string()).map_err(|e| within(e, &at))?),
                given.clone(),
            )
        }
        None => (None, Value::Null),
        Some(other) => {
            return Err(QueryError::InvalidParameter(format!(
                "{at}.timezone is {other}; give an offset in seconds (e.g. -28800) or an IANA \
                 zone name (e.g. Europe/Berlin)"
            )));
        }
    };

    let (filters, given_filters) = match given("filters") {
        Some(Value::Array(items)) => (
            Filters::from_values(items, &format!("{at}.filters"))?,
            items.clone(),
        ),
        None => (Filters::default(), Vec::new()),
        Some(other) => {
            return Err(QueryError::Filter(format!(
                "{at}.filters is {other}, not an array; give [{{\"property_name\": ..., \
                 \"operator\": ..., \"property_value\": ...}}, ...]"
            )));
        }
    };

    Ok(Step {
        event_collection,
        actor_property,
        timeframe,
        timezone,
        filters,
        optional: flag(fields, "optional", &at)?,
        inverted: flag(fields, "inverted", &at)?,
        with_actors: flag(fields, "with_actors", &at)?,
        given: StepGiven {
            timeframe: given_timeframe,
            timezone: given_timezone,
            filters: given_filters,
        },
    })
}

/// A boolean field: absent or `null` is false; anything but a boolean is refused.
fn flag(fields: &Map<String, Value>, name: &str, at: &str) -> Result<bool, QueryError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(other) => Err(QueryError::InvalidParameter(format!(
            "{at}.{name} is {other}, not true or false; give a JSON boolean or leave it out \
             (false)"
        ))),
    }
}

/// A timeframe or timezone error, its message prefixed with the step it is about. Other
/// errors (none arise there) pass unchanged.
fn within(error: QueryError, at: &str) -> QueryError {
    match error {
        QueryError::TimeframeDefinition(message) => {
            QueryError::TimeframeDefinition(format!("{at}: {message}"))
        }
        QueryError::InvalidParameter(message) => {
            QueryError::InvalidParameter(format!("{at}: {message}"))
        }
        other => other,
    }
}

/// The funnel's answer from each step's actors (`actors[i]`: every actor who did step `i` in its
/// window, after its filters): `{"result": [...], "steps": [...], "actors"?: [...]}` (rules in
/// the module docs). `actors` is present when some step has `with_actors`, aligned with the
/// steps: the sorted actors a step passes, or `null`. A step without a set counts as done by
/// nobody.
pub fn evaluate(funnel: &Funnel, actors: &[BTreeSet<ValueKey>]) -> Value {
    debug_assert_eq!(funnel.steps.len(), actors.len(), "one actor set per step");
    let nobody = BTreeSet::new();
    let mut counts = Vec::with_capacity(funnel.steps.len());
    let mut listed = Vec::with_capacity(funnel.steps.len());
    // The actors who passed the most recent step that is not optional.
    let mut candidates: Option<BTreeSet<ValueKey>> = None;
    for (index, step) in funnel.steps.iter().enumerate() {
        let did = actors.get(index).unwrap_or(&nobody);
        let passing: BTreeSet<ValueKey> = match &candidates {
            None if step.inverted => BTreeSet::new(),
            None => did.clone(),
            Some(candidates) => candidates
                .iter()
                .filter(|actor| did.contains(actor) != step.inverted)
                .cloned()
                .collect(),
        };
        counts.push(passing.len());
        listed.push(if step.with_actors {
            Value::Array(passing.iter().map(ValueKey::to_json).collect())
        } else {
            Value::Null
        });
        if !step.optional || candidates.is_none() {
            candidates = Some(passing);
        }
    }
    let mut answer = json!({
        "result": counts,
        "steps": funnel.steps.iter().map(Step::echo).collect::<Vec<_>>(),
    });
    if funnel.with_actors() {
        answer["actors"] = Value::Array(listed);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ms, window};
    use super::*;

    const NOW: i64 = 1_710_000_000_123; // 2024-03-09T16:00:00.123Z

    fn steps(value: Value) -> Vec<Step> {
        parse_steps(&value).expect("valid steps")
    }

    fn funnel(value: Value) -> Funnel {
        Funnel {
            steps: steps(value),
            timeframe: None,
            timezone: Timezone::default(),
        }
    }

    fn step(collection: &str) -> Value {
        json!({"event_collection": collection, "actor_property": "user"})
    }

    fn set(values: &[Value]) -> BTreeSet<ValueKey> {
        values.iter().map(|v| ValueKey::of(Some(v))).collect()
    }

    /// Each step's actors from its events, as the engine collects them.
    fn actors(funnel: &Funnel, events: &[&[Value]]) -> Vec<BTreeSet<ValueKey>> {
        funnel
            .steps
            .iter()
            .zip(events)
            .enumerate()
            .map(|(index, (step, events))| {
                let mut actors = BTreeSet::new();
                for event in *events {
                    if let Some(actor) = step.actor_of(event) {
                        add_actor(&mut actors, actor, index).expect("within bounds");
                    }
                }
                actors
            })
            .collect()
    }

    fn result(funnel: &Funnel, actors: &[BTreeSet<ValueKey>]) -> Value {
        evaluate(funnel, actors)["result"].clone()
    }

    #[test]
    fn purchases_then_returns_as_keen_answers_live() {
        let funnel = funnel(json!([
            {"event_collection": "purchases", "actor_property": "username"},
            {"event_collection": "returns", "actor_property": "username"},
        ]));
        let purchases = [json!({"username": "bob"}), json!({"username": "ted"})];
        let returns = [json!({"username": "bob"})];
        let sets = actors(&funnel, &[&purchases, &returns]);
        let answer = evaluate(&funnel, &sets);
        assert_eq!(answer["result"], json!([2, 1]));
        assert_eq!(
            answer["steps"],
            json!([
                {"event_collection": "purchases", "actor_property": "username",
                 "timeframe": null, "timezone": null, "filters": [],
                 "optional": false, "inverted": false, "with_actors": false},
                {"event_collection": "returns", "actor_property": "username",
                 "timeframe": null, "timezone": null, "filters": [],
                 "optional": false, "inverted": false, "with_actors": false},
            ])
        );
        assert!(answer.get("actors").is_none(), "{answer}");
    }

    #[test]
    fn the_order_of_steps_is_not_enforced() {
        // Bob returned before he ever purchased (in the other collection's window): he still
        // passes, as only membership counts.
        let funnel = funnel(json!([step("signups"), step("purchases"), step("returns")]));
        let sets = [
            set(&[json!("bob"), json!("ted"), json!("amy")]),
            set(&[json!("bob"), json!("ted"), json!("zed")]),
            set(&[json!("bob"), json!("amy")]),
        ];
        assert_eq!(result(&funnel, &sets), json!([3, 2, 1]));
        // Reordering steps changes nothing about who did what; the narrowing follows step order.
        let reversed = [sets[2].clone(), sets[1].clone(), sets[0].clone()];
        assert_eq!(result(&funnel, &reversed), json!([2, 1, 1]));
    }

    #[test]
    fn an_optional_step_does_not_narrow_later_ones() {
        let mut optional = step("newsletter");
        optional["optional"] = json!(true);
        let funnel = funnel(json!([step("signups"), optional, step("purchases")]));
        let sets = [
            set(&[json!("bob"), json!("ted"), json!("amy")]),
            set(&[json!("bob")]),
            set(&[json!("ted"), json!("amy"), json!("zed")]),
        ];
        // Step 3 counts from step 1's actors, not from step 2's.
        assert_eq!(result(&funnel, &sets), json!([3, 1, 2]));

        // Two optional steps in a row both count from the last required one.
        let mut second = step("survey");
        second["optional"] = json!(true);
        let mut first = step("newsletter");
        first["optional"] = json!(true);
        let funnel = self::funnel(json!([step("signups"), first, second, step("purchases")]));
        let sets = [
            set(&[json!("bob"), json!("ted")]),
            set(&[json!("bob")]),
            set(&[json!("ted"), json!("zed")]),
            set(&[json!("bob"), json!("ted")]),
        ];
        assert_eq!(result(&funnel, &sets), json!([2, 1, 1, 2]));
    }

    #[test]
    fn an_inverted_step_passes_those_who_did_not_do_it() {
        let mut inverted = step("purchases");
        inverted["inverted"] = json!(true);
        let funnel = funnel(json!([step("signups"), inverted, step("support_tickets")]));
        let sets = [
            set(&[json!("bob"), json!("ted"), json!("amy")]),
            set(&[json!("bob"), json!("zed")]),
            set(&[json!("bob"), json!("ted")]),
        ];
        // ted and amy signed up without purchasing; of them only ted opened a ticket (bob
        // did too, but he purchased).
        assert_eq!(result(&funnel, &sets), json!([3, 2, 1]));
    }

    #[test]
    fn an_optional_inverted_step_counts_without_narrowing() {
        let mut side = step("purchases");
        side["optional"] = json!(true);
        side["inverted"] = json!(true);
        let funnel = funnel(json!([step("signups"), side, step("logins")]));
        let sets = [
            set(&[json!("bob"), json!("ted"), json!("amy")]),
            set(&[json!("bob")]),
            set(&[json!("bob"), json!("ted")]),
        ];
        assert_eq!(result(&funnel, &sets), json!([3, 2, 2]));
    }

    #[test]
    fn actors_are_listed_for_the_steps_that_ask_aligned_with_the_steps() {
        let mut first = step("signups");
        first["with_actors"] = json!(true);
        let mut third = step("returns");
        third["with_actors"] = json!(true);
        third["inverted"] = json!(true);
        let funnel = funnel(json!([first, step("purchases"), third]));
        let sets = [
            set(&[json!("ted"), json!(7), json!("bob"), json!("amy")]),
            set(&[json!("bob"), json!("ted"), json!(7)]),
            set(&[json!("bob")]),
        ];
        let answer = evaluate(&funnel, &sets);
        assert_eq!(answer["result"], json!([4, 3, 2]));
        // Sorted in ValueKey order: numbers before strings.
        assert_eq!(
            answer["actors"],
            json!([[7, "amy", "bob", "ted"], null, [7, "ted"]])
        );
        assert_eq!(answer["steps"][2]["with_actors"], json!(true));
        assert_eq!(answer["steps"][2]["inverted"], json!(true));
        assert_eq!(answer["steps"][1]["with_actors"], json!(false));
    }

    #[test]
    fn events_without_an_actor_are_skipped() {
        let funnel = funnel(json!([
            {"event_collection": "signups", "actor_property": "user.id"},
            {"event_collection": "purchases", "actor_property": "user.id"},
        ]));
        let signups = [
            json!({"user": {"id": "bob"}}),
            json!({"user": {"id": null}}),
            json!({"user": {}}),
            json!({"user": "bob"}),
            json!({}),
        ];
        let purchases = [
            json!({"user": {"id": null}}),
            json!({"user": {"id": "bob"}}),
        ];
        let sets = actors(&funnel, &[&signups, &purchases]);
        assert_eq!(sets[0], set(&[json!("bob")]));
        assert_eq!(result(&funnel, &sets), json!([1, 1]));
        // A null actor in both steps is not followed through either.
        let sets = actors(&funnel, &[&signups[1..], &purchases[..1]]);
        assert_eq!(result(&funnel, &sets), json!([0, 0]));
    }

    #[test]
    fn one_and_one_point_zero_are_one_actor() {
        let funnel = funnel(json!([step("signups"), step("purchases")]));
        let signups = [json!({"user": 1}), json!({"user": 1.0}), json!({"user": 2})];
        let purchases = [json!({"user": 1.0})];
        let sets = actors(&funnel, &[&signups, &purchases]);
        assert_eq!(sets[0].len(), 2);
        assert_eq!(result(&funnel, &sets), json!([2, 1]));
    }

    #[test]
    fn actor_sets_are_bounded() {
        let mut actors = BTreeSet::new();
        for n in 0..MAX_ACTORS {
            add_actor(&mut actors, ValueKey::Number(n as f64), 3).expect("within bounds");
        }
        // A repeated actor costs nothing; one more distinct actor is refused.
        add_actor(&mut actors, ValueKey::Number(0.0), 3).expect("already counted");
        let error = add_actor(&mut actors, ValueKey::Number(-1.0), 3).expect_err("refused");
        assert_eq!(error, too_many_actors(3));
        assert_eq!(error.error_code(), "QueryTooLargeError");
        assert!(
            error
                .message()
                .starts_with("steps[3] has more than 1000000"),
            "{error}"
        );
        assert!(error.message().contains("shorter timeframe"), "{error}");
        assert!(error.message().contains("filters on the step"), "{error}");
    }

    #[test]
    fn key_filters_apply_to_every_step() {
        let mut funnel = funnel(json!([
            step("signups"),
            {"event_collection": "purchases", "actor_property": "user",
             "filters": [{"property_name": "price", "operator": "gt", "property_value": 10}]},
        ]));
        let key = Filters::from_values(
            &[json!({"property_name": "tenant", "operator": "eq", "property_value": 7})],
            "the key's options.queries.filters",
        )
        .expect("valid key filters");
        funnel.and_key_filters(&key);
        assert_eq!(funnel.steps[0].filters.len(), 1);
        assert_eq!(funnel.steps[1].filters.len(), 2);
        let signup = |tenant| json!({"user": "bob", "tenant": tenant});
        assert!(funnel.steps[0].actor_of(&signup(7)).is_some());
        assert!(funnel.steps[0].actor_of(&signup(8)).is_none());
        let purchase = |tenant, price| json!({"user": "bob", "tenant": tenant, "price": price});
        assert!(funnel.steps[1].actor_of(&purchase(7, 20)).is_some());
        assert!(funnel.steps[1].actor_of(&purchase(8, 20)).is_none());
        assert!(funnel.steps[1].actor_of(&purchase(7, 5)).is_none());
        // The echo shows the request's filters only, never the key's.
        let answer = evaluate(&funnel, &[BTreeSet::new(), BTreeSet::new()]);
        assert_eq!(answer["steps"][0]["filters"], json!([]));
        assert_eq!(
            answer["steps"][1]["filters"],
            json!([{"property_name": "price", "operator": "gt", "property_value": 10}])
        );
    }

    #[test]
    fn a_step_window_falls_back_on_the_funnel() {
        let mut funnel = funnel(json!([
            {"event_collection": "signups", "actor_property": "user",
             "timeframe": {"start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z"}},
            step("purchases"),
            {"event_collection": "returns", "actor_property": "user", "timezone": 3600},
            {"event_collection": "refunds", "actor_property": "user",
             "timeframe": "yesterday", "timezone": "Europe/Berlin"},
        ]));
        // No timeframe anywhere: all time, except for the step with its own.
        assert_eq!(
            funnel.step_window(0, NOW),
            window("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
        );
        assert_eq!(funnel.step_window(1, NOW), Window::ALL_TIME);
        assert_eq!(funnel.step_window(2, NOW), Window::ALL_TIME);
        assert_eq!(
            funnel.step_window(3, NOW),
            window("2024-03-07T23:00:00Z", "2024-03-08T23:00:00Z")
        );

        funnel.timeframe = Some(Timeframe::parse("today").expect("timeframe"));
        funnel.timezone = Timezone::parse("-28800").expect("timezone");
        // Own timeframe wins; the funnel's is aligned in the funnel's timezone, or the step's.
        assert_eq!(
            funnel.step_window(0, NOW),
            window("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
        );
        assert_eq!(
            funnel.step_window(1, NOW),
            Window::new(ms("2024-03-09T08:00:00Z"), ms("2024-03-10T08:00:00Z"))
        );
        assert_eq!(
            funnel.step_window(2, NOW),
            window("2024-03-08T23:00:00Z", "2024-03-09T23:00:00Z")
        );
        assert_eq!(
            funnel.step_window(3, NOW),
            window("2024-03-07T23:00:00Z", "2024-03-08T23:00:00Z")
        );
    }

    #[test]
    fn a_full_step_parses_and_echoes_as_given() {
        let given = json!([
            step("signups"),
            {"event_collection": "purchases", "actor_property": "user.id",
             "timeframe": {"start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z"},
             "timezone": "Europe/Berlin",
             "filters": [{"property_name": "price", "operator": "gte", "property_value": 1}],
             "optional": true, "inverted": false, "with_actors": true},
            {"event_collection": "returns", "actor_property": "user.id",
             "timeframe": "this_7_days", "timezone": -28800, "filters": null,
             "optional": null, "inverted": true},
        ]);
        let parsed = steps(given.clone());
        let second = &parsed[1];
        assert_eq!(second.event_collection, "purchases");
        assert_eq!(second.actor_property, "user.id");
        assert_eq!(
            second.timeframe,
            Some(Timeframe::Absolute(window(
                "2024-01-01T00:00:00Z",
                "2024-02-01T00:00:00Z"
            )))
        );
        assert_eq!(
            second.timezone,
            Some(Timezone::parse("Europe/Berlin").expect("zone"))
        );
        assert_eq!(second.filters.len(), 1);
        assert!(second.optional && !second.inverted && second.with_actors);
        let third = &parsed[2];
        assert_eq!(
            third.timeframe,
            Some(Timeframe::parse("this_7_days").expect("relative"))
        );
        assert_eq!(
            third.timezone,
            Some(Timezone::parse("-28800").expect("offset"))
        );
        assert!(third.filters.is_empty() && !third.optional && third.inverted);

        assert_eq!(
            second.echo(),
            json!({"event_collection": "purchases", "actor_property": "user.id",
                   "timeframe": given[1]["timeframe"], "timezone": "Europe/Berlin",
                   "filters": given[1]["filters"],
                   "optional": true, "inverted": false, "with_actors": true})
        );
        assert_eq!(
            third.echo(),
            json!({"event_collection": "returns", "actor_property": "user.id",
                   "timeframe": "this_7_days", "timezone": -28800, "filters": [],
                   "optional": false, "inverted": true, "with_actors": false})
        );
    }

    #[test]
    fn steps_may_come_as_a_json_string() {
        let text = r#"[{"event_collection": "purchases", "actor_property": "username"},
                       {"event_collection": "returns", "actor_property": "username",
                        "timeframe": "this_14_days"}]"#;
        let parsed = parse_steps(&Value::String(text.into())).expect("valid");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].event_collection, "returns");
        assert_eq!(parsed[1].given.timeframe, json!("this_14_days"));
        assert_eq!(parsed, steps(serde_json::from_str(text).expect("json")));
        // The most steps accepted.
        let most: Vec<Value> = (0..MAX_STEPS).map(|_| step("signups")).collect();
        assert_eq!(steps(Value::Array(most)).len(), MAX_STEPS);
    }

    #[test]
    fn bad_steps_are_refused_naming_the_step() {
        let many: Vec<Value> = (0..=MAX_STEPS).map(|_| step("signups")).collect();
        let with = |index: usize, field: &str, value: Value| {
            let mut list = json!([step("signups"), step("purchases"), step("returns")]);
            if value == json!("<remove>") {
                list[index].as_object_mut().expect("object").remove(field);
            } else {
                list[index][field] = value;
            }
            list
        };
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                Value::Null,
                "MissingRequiredPropertyError",
                "steps is required",
            ),
            (
                json!(" "),
                "MissingRequiredPropertyError",
                "steps is required",
            ),
            (
                json!({"event_collection": "a"}),
                "InvalidParameterError",
                "steps is not a JSON array",
            ),
            (
                json!(3),
                "InvalidParameterError",
                "steps is not a JSON array",
            ),
            (
                json!("[{"),
                "InvalidParameterError",
                "steps is not valid JSON",
            ),
            (
                json!("\"[]\""),
                "InvalidParameterError",
                "steps is not a JSON array",
            ),
            (
                json!([]),
                "InvalidParameterError",
                "steps holds 0 steps; a funnel has 1 to 20",
            ),
            (json!("[]"), "InvalidParameterError", "steps holds 0 steps"),
            (
                Value::Array(many),
                "InvalidParameterError",
                "steps holds 21 steps",
            ),
            (
                json!([step("a"), "b"]),
                "InvalidParameterError",
                "steps[1] is not an object",
            ),
            (
                with(1, "foo", json!(1)),
                "InvalidParameterError",
                "steps[1] has an unknown field \"foo\"; a step has event_collection",
            ),
            (
                with(0, "optional", json!(true)),
                "InvalidParameterError",
                "steps[0] is optional, but the first step cannot be: it defines the actors",
            ),
            (
                with(0, "inverted", json!(true)),
                "InvalidParameterError",
                "steps[0] is inverted, but the first step cannot be",
            ),
            (
                with(2, "event_collection", json!("<remove>")),
                "MissingRequiredPropertyError",
                "steps[2].event_collection is required",
            ),
            (
                with(2, "event_collection", json!("")),
                "MissingRequiredPropertyError",
                "steps[2].event_collection is required",
            ),
            (
                with(1, "event_collection", json!(5)),
                "InvalidCollectionNameError",
                "steps[1].event_collection is 5, not a string",
            ),
            (
                with(1, "event_collection", json!("_internal")),
                "InvalidCollectionNameError",
                "steps[1].event_collection \"_internal\"",
            ),
            (
                with(1, "event_collection", json!("a b")),
                "InvalidCollectionNameError",
                "' '",
            ),
            (
                with(2, "actor_property", json!("<remove>")),
                "MissingRequiredPropertyError",
                "steps[2].actor_property is required",
            ),
            (
                with(2, "actor_property", Value::Null),
                "MissingRequiredPropertyError",
                "steps[2].actor_property is required",
            ),
            (
                with(2, "actor_property", json!(["user"])),
                "InvalidParameterError",
                "steps[2].actor_property is [\"user\"], not a string",
            ),
            (
                with(2, "actor_property", json!("user..id")),
                "InvalidParameterError",
                "steps[2].actor_property \"user..id\" is not a dotted path",
            ),
            (
                with(1, "timeframe", json!("last_week")),
                "TimeframeDefinitionError",
                "steps[1]: timeframe \"last_week\"",
            ),
            (
                with(1, "timeframe", json!({"start": "2024-01-01T00:00:00Z"})),
                "TimeframeDefinitionError",
                "steps[1]: ",
            ),
            (
                with(1, "timeframe", json!(7)),
                "TimeframeDefinitionError",
                "steps[1].timeframe is 7",
            ),
            (
                with(1, "timezone", json!("Mars/Base")),
                "InvalidParameterError",
                "steps[1]: timezone \"Mars/Base\"",
            ),
            (
                with(1, "timezone", json!(3600.5)),
                "InvalidParameterError",
                "steps[1].timezone 3600.5 is not a whole number of seconds",
            ),
            (
                with(1, "timezone", json!(100_000)),
                "InvalidParameterError",
                "steps[1]: timezone 100000 is an offset of more than 18 hours",
            ),
            (
                with(1, "timezone", json!(true)),
                "InvalidParameterError",
                "steps[1].timezone is true",
            ),
            (
                with(1, "filters", json!([1])),
                "FilterError",
                "steps[1].filters[0] is not an object",
            ),
            (
                with(
                    2,
                    "filters",
                    json!([{"property_name": "a", "operator": "near"}]),
                ),
                "FilterError",
                "steps[2].filters[0] has operator \"near\"",
            ),
            (
                with(1, "filters", json!({"property_name": "a"})),
                "FilterError",
                "steps[1].filters is {\"property_name\":\"a\"}, not an array",
            ),
            (
                with(1, "optional", json!("true")),
                "InvalidParameterError",
                "steps[1].optional is \"true\", not true or false",
            ),
            (
                with(2, "inverted", json!(1)),
                "InvalidParameterError",
                "steps[2].inverted is 1, not true or false",
            ),
            (
                with(0, "with_actors", json!("yes")),
                "InvalidParameterError",
                "steps[0].with_actors is \"yes\", not true or false",
            ),
        ];
        for (value, expected_code, expected_text) in cases {
            let error = parse_steps(&value).expect_err("refused");
            assert_eq!(error.error_code(), expected_code, "{value}: {error}");
            assert!(error.message().contains(expected_text), "{value}: {error}");
        }
    }
}
