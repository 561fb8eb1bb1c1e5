//! Exact decimals from TOML. TOML writes `0.15` as a float; Rust renders a float as the
//! shortest text that reads back to the same value, which is exactly what the operator
//! typed, so money and multipliers are parsed from that text and never computed in
//! floating point. Strings (`"0.15"`) and integers are accepted too.

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalText(pub String);

impl<'de> Deserialize<'de> for DecimalText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Int(i64),
            Float(f64),
            Text(String),
        }
        Ok(DecimalText(match Any::deserialize(d)? {
            Any::Int(i) => i.to_string(),
            Any::Float(f) if f.is_finite() => format!("{f}"),
            Any::Float(_) => return Err(serde::de::Error::custom("expected a finite decimal number")),
            Any::Text(s) => s,
        }))
    }
}
