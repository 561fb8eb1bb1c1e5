//! Money on the request path: holds before the upstream call, settlement after it.
//!
//! [`Billing`] keeps each active account's balance, outstanding holds and spend in the
//! current day and month in memory, loaded once from the ledger and kept current by the
//! server's own settlements plus the credits other processes stamp with a store revision
//! (see [`Billing::apply_credits`]). A call first takes a [`Hold`] of its worst case — an
//! atomic check-and-reserve against the balance, the key's quota and the spend caps — and
//! settles it exactly once with the real charge: [`Hold::settle`] consumes the hold, and a
//! hold dropped unsettled is released at no charge. So concurrent calls can never spend
//! past a balance by more than what they held, and the balance moves by the settled
//! charges exactly.
//!
//! Nothing here writes to the store: a settlement returns the ledger rows to persist, which
//! the server writes in the same batch as the call record.

mod accounts;
mod estimate;

pub use accounts::{Billing, Hold, HoldRequest, Refusal, SpendCaps};
pub use estimate::{DEFAULT_MAX_OUTPUT_TOKENS, worst_case};
