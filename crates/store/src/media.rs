//! Generated media as the store keeps it (DESIGN §3.1 exception (b)): sealed bytes with
//! their owner, content type and expiry. The store never sees plaintext; the server seals
//! and opens, and the scheduled purge deletes what has expired.

use crate::StoreError;
use crate::codec::{Columns, in_table};
use uuid::Uuid;
use veil_domain::{Timestamp, UserId};

/// One generated blob to keep, already sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMedia {
    pub id: Uuid,
    pub user_id: UserId,
    pub content_type: String,
    pub created_at: Timestamp,
    /// Served until this instant; the purge deletes it from then on.
    pub expires_at: Timestamp,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A kept blob as read back (expired or not: the caller compares `expires_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMedia {
    pub id: Uuid,
    pub user_id: UserId,
    pub content_type: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

pub(crate) fn stored(row: &impl Columns) -> Result<StoredMedia, StoreError> {
    in_table("media", || {
        Ok(StoredMedia {
            id: row.uuid("id")?,
            user_id: UserId::from_uuid(row.uuid("user_id")?),
            content_type: row.text("content_type")?,
            created_at: Timestamp::from_unix_millis(row.int("created_at")?),
            expires_at: Timestamp::from_unix_millis(row.int("expires_at")?),
            nonce: row.bytes("nonce")?,
            ciphertext: row.bytes("ciphertext")?,
        })
    })
}
