//! The audit log's shared rules (DESIGN §3.9): the canonical text an entry is hashed over,
//! the chain link, and the walk `verify_audit` runs. Both backends use these, so an entry
//! written by one verifies the same way on the other (and in an export).
//!
//! `hash = hex(sha256(prev_hash || "\n" || canonical))`, where `canonical` is the compact JSON
//! array `[seq, time_ms, actor, action, subject_user|null, target|null, details]` and
//! `details` is JSON with object keys sorted bytewise at every level. The first entry links to
//! [`GENESIS_HASH`]. `details` is stored in exactly that canonical text and hashed as stored.

use crate::StoreError;
use crate::codec::corrupt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use veil_domain::{Timestamp, UserId};

/// What the first entry's `prev_hash` is.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An admin action to record. Only ids, names and small metadata: never request content,
/// secrets or personal data (the log outlives erased accounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// Who acted, e.g. `cli` or `user:<uuid>`.
    pub actor: String,
    /// What was done, e.g. `key.create`, `user.credit`, `user.erase`, `user.export`.
    pub action: String,
    /// The account the action is about, if any (what export and `list_audit` filter on).
    pub subject_user: Option<UserId>,
    /// An id or name of the thing acted on, never content.
    pub target: Option<String>,
    /// A small JSON object of metadata (amounts, flags, counts).
    pub details: Value,
}

/// One entry as stored: its place in the chain and its link to the previous entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// 1, 2, 3, … without gaps; a gap means a deleted row.
    pub seq: i64,
    pub time: Timestamp,
    pub actor: String,
    pub action: String,
    pub subject_user: Option<UserId>,
    pub target: Option<String>,
    pub details: Value,
    /// The previous entry's `hash` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// Lowercase hex SHA-256 over `prev_hash` and this entry's canonical text.
    pub hash: String,
}

/// The outcome of walking the whole chain in `seq` order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditVerification {
    /// How many entries the log holds.
    pub entries: u64,
    /// The first `seq` where the chain breaks: a modified row (its hash no longer matches),
    /// a bad link (its `prev_hash` is not the previous hash) or a deleted row (the missing
    /// `seq`). `None`: intact. Dropping the newest entries leaves an intact, shorter chain;
    /// compare the latest hash with one recorded elsewhere to catch that.
    pub first_broken: Option<i64>,
}

/// `value` as compact JSON with every object's keys sorted bytewise; independent of how
/// serde_json orders maps in this build.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's compact form (strings escaped, numbers shortest round-trip).
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(raw: &str, out: &mut String) {
    out.push_str(&Value::String(raw.to_owned()).to_string());
}

/// The chain hash of one entry; `details` is its canonical JSON text (as stored).
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    time: Timestamp,
    actor: &str,
    action: &str,
    subject_user: Option<UserId>,
    target: Option<&str>,
    details: &str,
) -> String {
    let mut canonical = format!("[{seq},{},", time.unix_millis());
    write_string(actor, &mut canonical);
    canonical.push(',');
    write_string(action, &mut canonical);
    canonical.push(',');
    match subject_user {
        Some(user) => write_string(&user.as_uuid().hyphenated().to_string(), &mut canonical),
        None => canonical.push_str("null"),
    }
    canonical.push(',');
    match target {
        Some(target) => write_string(target, &mut canonical),
        None => canonical.push_str("null"),
    }
    canonical.push(',');
    canonical.push_str(details);
    canonical.push(']');

    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

/// An audit row as stored, `details` still as its canonical text.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    pub seq: i64,
    pub time: Timestamp,
    pub actor: String,
    pub action: String,
    pub subject_user: Option<Uuid>,
    pub target: Option<String>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    /// The next entry of a chain whose last entry is `(seq - 1, prev_hash)`.
    pub fn seal(entry: &NewAuditEntry, seq: i64, time: Timestamp, prev_hash: String) -> Self {
        let details = canonical_json(&entry.details);
        let hash = entry_hash(
            &prev_hash,
            seq,
            time,
            &entry.actor,
            &entry.action,
            entry.subject_user,
            entry.target.as_deref(),
            &details,
        );
        Self {
            seq,
            time,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            subject_user: entry.subject_user.map(|id| id.as_uuid()),
            target: entry.target.clone(),
            details,
            prev_hash,
            hash,
        }
    }

    fn computed_hash(&self) -> String {
        entry_hash(
            &self.prev_hash,
            self.seq,
            self.time,
            &self.actor,
            &self.action,
            self.subject_user.map(UserId::from_uuid),
            self.target.as_deref(),
            &self.details,
        )
    }

    pub fn into_entry(self) -> Result<AuditEntry, StoreError> {
        let details = serde_json::from_str(&self.details).map_err(|_| corrupt("audit_log.details"))?;
        Ok(self.into_entry_with(details))
    }

    /// The entry with `details` already in hand (what was just sealed).
    pub fn into_entry_with(self, details: Value) -> AuditEntry {
        AuditEntry {
            seq: self.seq,
            time: self.time,
            actor: self.actor,
            action: self.action,
            subject_user: self.subject_user.map(UserId::from_uuid),
            target: self.target,
            details,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// Walks the chain row by row in `seq` order (the backends feed it page by page).
pub(crate) struct ChainWalk {
    expected_seq: i64,
    prev_hash: String,
    entries: u64,
    first_broken: Option<i64>,
    /// The last `seq` seen, where the next page starts.
    pub last_seq: i64,
}

impl ChainWalk {
    pub fn new() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS_HASH.to_owned(), entries: 0, first_broken: None, last_seq: 0 }
    }

    /// Takes the next row; a row that does not decode counts as modified. Other errors
    /// are the caller's (the walk cannot judge a row it could not read).
    pub fn visit(&mut self, seq: i64, row: Result<AuditRow, StoreError>) -> Result<(), StoreError> {
        self.entries += 1;
        self.last_seq = seq;
        if self.first_broken.is_some() {
            return Ok(());
        }
        let row = match row {
            Ok(row) => row,
            Err(StoreError::Corrupt(_)) => {
                self.first_broken = Some(seq);
                return Ok(());
            }
            Err(other) => return Err(other),
        };
        if seq != self.expected_seq {
            // Rows come in ascending order, so the expected one is missing.
            self.first_broken = Some(self.expected_seq);
        } else if row.prev_hash != self.prev_hash || row.hash != row.computed_hash() {
            self.first_broken = Some(seq);
        } else {
            self.expected_seq = seq + 1;
            self.prev_hash = row.hash;
        }
        Ok(())
    }

    pub fn finish(self) -> AuditVerification {
        AuditVerification { entries: self.entries, first_broken: self.first_broken }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_is_compact() {
        let value = json!({"b": 1, "a": {"z": [true, null, {"y": "é\"\n", "x": -2.5}], "c": "d"}, "A": 0});
        assert_eq!(canonical_json(&value), r#"{"A":0,"a":{"c":"d","z":[true,null,{"x":-2.5,"y":"é\"\n"}]},"b":1}"#);
        assert_eq!(canonical_json(&json!({})), "{}");
        assert_eq!(canonical_json(&json!("x")), r#""x""#);
    }

    #[test]
    fn hash_is_pinned() {
        // A known answer, so other verifiers (scripts, exports) can check their canonical text.
        let user = UserId::parse("0190f0e2-0000-7000-8000-000000000001").unwrap();
        let hash = entry_hash(
            GENESIS_HASH,
            1,
            Timestamp::from_unix_millis(1_700_000_000_000),
            "cli",
            "user.credit",
            Some(user),
            Some("alice"),
            r#"{"amount":"5"}"#,
        );
        let canonical =
            r#"[1,1700000000000,"cli","user.credit","0190f0e2-0000-7000-8000-000000000001","alice",{"amount":"5"}]"#;
        let expected = hex::encode(Sha256::digest(format!("{GENESIS_HASH}\n{canonical}").as_bytes()));
        assert_eq!(hash, expected);
        assert_eq!(hash.len(), 64);
        // Absent fields are JSON null, not empty strings.
        let anonymous = entry_hash(GENESIS_HASH, 1, Timestamp::from_unix_millis(0), "cli", "x", None, None, "{}");
        let canonical = r#"[1,0,"cli","x",null,null,{}]"#;
        assert_eq!(anonymous, hex::encode(Sha256::digest(format!("{GENESIS_HASH}\n{canonical}").as_bytes())));
        assert_ne!(
            anonymous,
            entry_hash(GENESIS_HASH, 1, Timestamp::from_unix_millis(0), "cli", "x", None, Some(""), "{}")
        );
    }

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let entry = NewAuditEntry {
                    actor: "cli".to_owned(),
                    action: "key.create".to_owned(),
                    subject_user: None,
                    target: Some(format!("key-{seq}")),
                    details: json!({"n": seq}),
                };
                let row = AuditRow::seal(&entry, seq, Timestamp::from_unix_millis(seq), prev.clone());
                prev = row.hash.clone();
                row
            })
            .collect()
    }

    fn walk(rows: Vec<AuditRow>) -> AuditVerification {
        let mut walk = ChainWalk::new();
        for row in rows {
            walk.visit(row.seq, Ok(row)).unwrap();
        }
        walk.finish()
    }

    #[test]
    fn walk_finds_the_first_break() {
        assert_eq!(walk(Vec::new()), AuditVerification { entries: 0, first_broken: None });
        assert_eq!(walk(chain(5)), AuditVerification { entries: 5, first_broken: None });

        let mut modified = chain(5);
        modified[2].details = r#"{"n":30}"#.to_owned();
        assert_eq!(walk(modified), AuditVerification { entries: 5, first_broken: Some(3) });

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(walk(deleted), AuditVerification { entries: 4, first_broken: Some(2) });

        let mut first_gone = chain(3);
        first_gone.remove(0);
        assert_eq!(walk(first_gone).first_broken, Some(1));

        // A rewritten row with a recomputed hash still breaks the next link.
        let mut rehashed = chain(5);
        rehashed[1].target = Some("other".to_owned());
        rehashed[1].hash = rehashed[1].computed_hash();
        assert_eq!(walk(rehashed).first_broken, Some(3));

        let mut walk = ChainWalk::new();
        walk.visit(1, Err(StoreError::Corrupt("audit_log.subject_user".to_owned()))).unwrap();
        assert_eq!(walk.finish().first_broken, Some(1));
    }
}
