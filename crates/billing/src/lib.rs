//! Money on the request path: holds before the upstream call, settlement after it.
//!
//! A call first takes a [`Hold`] of its worst case — an atomic check-and-reserve against
//! the balance, the key's quota and the spend caps — and settles it exactly once with the
//! real charge: [`Hold::settle`] consumes the hold, and a hold dropped unsettled is
//! released at no charge. So concurrent calls can never spend past a balance by more than
//! what they held, and the balance moves by the settled charges exactly.
//!
//! [`Billing`] runs that protocol over a [`Wallets`], which keeps each account's balance,
//! outstanding holds and day/month spend (and each key's spend for its quota and caps):
//! [`MemoryWallets`] in this process for a single instance, or the Redis wallets of
//! `veil-cluster` shared by several. Either is loaded from the ledger and kept current by
//! the settlements plus the credits other processes stamp with a store revision (see
//! [`Billing::apply_credits`]).
//!
//! Nothing here writes to the store: a settlement returns the ledger rows to persist, which
//! the server writes in the same batch as the call record.

mod accounts;
mod estimate;
mod memory;

pub use accounts::{Billing, Hold, HoldRequest, Refusal, Reserved, SpendCaps, Wallets};
pub use estimate::{DEFAULT_MAX_OUTPUT_TOKENS, worst_case};
pub use memory::MemoryWallets;
