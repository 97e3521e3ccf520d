//! Alpaca-style samples (`{"instruction", "input"?, "output", "system"?, "history"?}`, as
//! Stanford Alpaca, XTuner's `alpaca_map_fn` and LLaMA-Factory's `alpaca` format write them),
//! turned into the conversation turns every other format has.
//!
//! The user turn is `instruction`, then `input` on a new line when it is not empty (XTuner and
//! LLaMA-Factory join them this way); `history` is a list of earlier `[query, response]` pairs
//! that come first.

use super::sample::kind_of;
use serde_json::{Map, Value, json};

/// Whether `obj` is an Alpaca sample rather than a conversation.
pub(super) fn is_alpaca(obj: &Map<String, Value>) -> bool {
    !obj.contains_key("conversations")
        && !obj.contains_key("messages")
        && (obj.contains_key("instruction") || obj.contains_key("output"))
}

/// The sample's turns as a `conversations` list (`from`/`value`, with the role names `user` and
/// `assistant` that the data's role map knows), or its problems.
pub(super) fn to_turns(
    obj: &Map<String, Value>,
    user: &str,
    assistant: &str,
) -> Result<Vec<Value>, Vec<String>> {
    let mut problems = vec![];
    let mut text = |key: &str, required: bool| -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) if required => {
                problems.push(format!("Alpaca sample without `{key}`"));
                None
            }
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                problems.push(format!("`{key}` must be a string, found {}", kind_of(v)));
                None
            }
        }
    };
    let instruction = text("instruction", true);
    let input = text("input", false);
    let output = text("output", true);
    let mut turns = vec![];
    match obj.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(pairs)) => {
            for (i, pair) in pairs.iter().enumerate() {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(q), Value::String(a)]) => {
                        turns.push(json!({"from": user, "value": q}));
                        turns.push(json!({"from": assistant, "value": a}));
                    }
                    _ => problems.push(format!(
                        "`history` item {i} must be a [query, response] pair of strings"
                    )),
                }
            }
        }
        Some(v) => problems.push(format!(
            "`history` must be a list of [query, response] pairs, found {}",
            kind_of(v)
        )),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let (Some(instruction), Some(output)) = (instruction, output) else {
        return Err(problems);
    };
    let query = match input {
        Some(input) if !input.trim().is_empty() => format!("{instruction}\n{input}"),
        _ => instruction,
    };
    turns.push(json!({"from": user, "value": query}));
    turns.push(json!({"from": assistant, "value": output}));
    Ok(turns)
}
