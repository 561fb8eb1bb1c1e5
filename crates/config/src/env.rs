//! `VEIL_…` environment overrides: `VEIL_SERVER__LISTEN=0.0.0.0:8787` sets
//! `server.listen`; `__` nests; a numeric segment indexes an array of tables
//! (`VEIL_CHANNEL__0__BASE_URL`). Values are read as TOML (numbers, booleans, arrays)
//! and fall back to plain strings.
//!
//! Only variables naming a config section are overrides. Veil's other variables
//! (`VEIL_MASTER_KEY`, `VEIL_CONFIG`, test switches) are not config keys and are left
//! alone; a nested variable (`VEIL_X__Y`) whose section does not exist is an error, so a
//! typo is not silently ignored.

use crate::ConfigError;

const SECTIONS: &[&str] = &[
    "server",
    "database",
    "redis",
    "privacy",
    "billing",
    "console",
    "log",
    "group",
    "channel",
    "model",
    "risk",
    "videos",
    "telemetry",
];

pub fn apply_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<(String, String)> = env.into_iter().filter(|(name, _)| name.starts_with("VEIL_")).collect();
    // Deterministic order, so array indices are created before their fields.
    overrides.sort();
    for (var, raw) in overrides {
        let Some(rest) = var.strip_prefix("VEIL_") else { continue };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let Some(section) = path.first() else { continue };
        if !SECTIONS.contains(&section.as_str()) {
            if path.len() > 1 {
                return Err(ConfigError::Env { var, message: format!("unknown config section '{section}'") });
            }
            continue;
        }
        if path.len() < 2 {
            return Err(ConfigError::Env {
                var,
                message: "name a key inside the section, e.g. VEIL_SERVER__LISTEN".into(),
            });
        }
        set_path(table, &path, parse_value(&raw)).map_err(|message| ConfigError::Env { var, message })?;
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    // Descend through a Value so tables and arrays are handled alike, then put the root
    // table back whatever happened.
    let mut root = toml::Value::Table(std::mem::take(table));
    let outcome = set_in(&mut root, path, value);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    outcome
}

fn set_in(root: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cursor = root;
    for (depth, segment) in parents.iter().enumerate() {
        let next_is_index = path.get(depth + 1).is_some_and(|s| s.parse::<usize>().is_ok());
        cursor = descend(cursor, segment, next_is_index)?;
    }
    match cursor {
        toml::Value::Table(t) => {
            t.insert(last.clone(), value);
            Ok(())
        }
        toml::Value::Array(items) => {
            let index: usize = last.parse().map_err(|_| format!("'{last}' is not an index"))?;
            if index > items.len() {
                return Err(format!("index {index} skips entries (the array has {})", items.len()));
            }
            if index == items.len() {
                items.push(value);
            } else if let Some(slot) = items.get_mut(index) {
                *slot = value;
            }
            Ok(())
        }
        _ => Err(format!("'{last}' is inside a value that is not a table")),
    }
}

fn descend<'a>(cursor: &'a mut toml::Value, segment: &str, next_is_index: bool) -> Result<&'a mut toml::Value, String> {
    let fresh = || if next_is_index { toml::Value::Array(Vec::new()) } else { toml::Value::Table(toml::Table::new()) };
    match cursor {
        toml::Value::Table(t) => Ok(t.entry(segment.to_owned()).or_insert_with(fresh)),
        toml::Value::Array(items) => {
            let index: usize = segment.parse().map_err(|_| format!("'{segment}' is not an index"))?;
            if index > items.len() {
                return Err(format!("index {index} skips entries (the array has {})", items.len()));
            }
            if index == items.len() {
                items.push(fresh());
            }
            items.get_mut(index).ok_or_else(|| format!("no entry {index}"))
        }
        _ => Err(format!("'{segment}' is inside a value that is not a table")),
    }
}
