//! Content screening: a group's deny rules (keywords, matched case-insensitively, and
//! regular expressions), checked against every text of a request before any upstream
//! call. A hit is reported by rule id only (`<group>:keyword:<n>`,
//! `<group>:pattern:<n>`) — never the matched text — so records and logs stay free of
//! content.
//!
//! Rules are compiled once per snapshot. A rule set that fails to compile blocks the
//! group's calls rather than letting them through unscreened.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::RegexSet;
use serde_json::Value;
use veil_domain::Group;

pub enum Screen {
    /// The group has no deny rules.
    Open,
    Rules {
        group: String,
        keywords: Option<AhoCorasick>,
        patterns: Option<RegexSet>,
    },
    /// The rules did not compile: fail closed.
    Broken,
}

/// The outcome of screening one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Blocked { rule_id: String },
    Misconfigured,
}

impl Screen {
    pub fn for_group(group: &Group) -> Screen {
        if group.deny_keywords.is_empty() && group.deny_patterns.is_empty() {
            return Screen::Open;
        }
        let keywords = if group.deny_keywords.is_empty() {
            None
        } else {
            match AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build(group.deny_keywords.iter().map(|k| k.to_lowercase()))
            {
                Ok(automaton) => Some(automaton),
                Err(_) => return Screen::Broken,
            }
        };
        let patterns = if group.deny_patterns.is_empty() {
            None
        } else {
            match RegexSet::new(&group.deny_patterns) {
                Ok(set) => Some(set),
                Err(_) => return Screen::Broken,
            }
        };
        Screen::Rules { group: group.name.to_string(), keywords, patterns }
    }

    /// Checks every string in `body` (message texts, tool arguments, prompts, inputs).
    pub fn check(&self, body: &serde_json::Map<String, Value>) -> Verdict {
        match self {
            Screen::Open => Verdict::Pass,
            Screen::Broken => Verdict::Misconfigured,
            Screen::Rules { group, keywords, patterns } => {
                let mut verdict = Verdict::Pass;
                for value in body.values() {
                    visit_strings(value, &mut |text| {
                        if verdict != Verdict::Pass {
                            return;
                        }
                        if let Some(rule) = check_text(keywords.as_ref(), patterns.as_ref(), text) {
                            verdict = Verdict::Blocked { rule_id: format!("{group}:{rule}") };
                        }
                    });
                    if verdict != Verdict::Pass {
                        break;
                    }
                }
                verdict
            }
        }
    }
}

fn check_text(keywords: Option<&AhoCorasick>, patterns: Option<&RegexSet>, text: &str) -> Option<String> {
    if let Some(keywords) = keywords {
        // ASCII case folding is built into the automaton; fold the rest of Unicode here.
        let folded;
        let haystack = if text.is_ascii() {
            text
        } else {
            folded = text.to_lowercase();
            &folded
        };
        if let Some(found) = keywords.find(haystack) {
            return Some(format!("keyword:{}", found.pattern().as_usize()));
        }
    }
    if let Some(patterns) = patterns
        && let Some(index) = patterns.matches(text).iter().next()
    {
        return Some(format!("pattern:{index}"));
    }
    None
}

fn visit_strings(value: &Value, visit: &mut impl FnMut(&str)) {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter().for_each(|item| visit_strings(item, visit)),
        Value::Object(fields) => fields.values().for_each(|field| visit_strings(field, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(keywords: &[&str], patterns: &[&str]) -> Group {
        let mut group = Group::builtin_default();
        group.deny_keywords = keywords.iter().map(|k| (*k).to_owned()).collect();
        group.deny_patterns = patterns.iter().map(|p| (*p).to_owned()).collect();
        group
    }

    fn body(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn keywords_match_case_insensitively_anywhere_in_the_request() {
        let screen = Screen::for_group(&group(&["forbidden phrase", "Ünïcode"], &[]));
        let clean = body(json!({"messages": [{"role": "user", "content": "hello"}]}));
        assert_eq!(screen.check(&clean), Verdict::Pass);
        let hit =
            body(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a FORBIDDEN Phrase"}]}]}));
        assert_eq!(screen.check(&hit), Verdict::Blocked { rule_id: "default:keyword:0".into() });
        let tool = body(json!({"messages": [{"tool_calls": [{"function": {"arguments": "{\"q\":\"üNÏCODE\"}"}}]}]}));
        assert_eq!(screen.check(&tool), Verdict::Blocked { rule_id: "default:keyword:1".into() });
    }

    #[test]
    fn patterns_report_their_index_and_broken_rules_fail_closed() {
        let screen = Screen::for_group(&group(&[], &["^never$", r"\bDROP\s+TABLE\b"]));
        assert_eq!(
            screen.check(&body(json!({"prompt": "please DROP  TABLE users"}))),
            Verdict::Blocked { rule_id: "default:pattern:1".into() }
        );
        assert_eq!(Screen::for_group(&group(&[], &["(unclosed"])).check(&body(json!({}))), Verdict::Misconfigured);
        assert_eq!(Screen::for_group(&group(&[], &[])).check(&body(json!({"prompt": "x"}))), Verdict::Pass);
    }
}
