//! Redemption codes for black-box tests, made the way `veil admin code create` makes them:
//! generated, hashed with the installation's `redemption-code-hash` key (the one the running
//! server derives too) and stored as hash and prefix only.

use crate::TestApp;
use veil_domain::{Money, Timestamp};
use veil_secrets::{MasterKey, RedemptionCode};
use veil_store::NewRedemptionCode;

impl TestApp {
    /// Stores `count` codes worth `amount` (a decimal such as `"5"`) each and returns them.
    pub async fn create_codes(&self, amount: &str, count: usize, expires_at: Option<Timestamp>) -> Vec<String> {
        let master = MasterKey::load_or_create(None, &self.settings.data_dir).expect("master key");
        let hasher = veil_secrets::code_hasher(self.store.as_ref(), &master).await.expect("code hasher");
        let amount = Money::parse_decimal(amount).expect("a decimal amount");
        let codes: Vec<RedemptionCode> = (0..count).map(|_| RedemptionCode::generate()).collect();
        let rows: Vec<NewRedemptionCode> = codes
            .iter()
            .map(|code| NewRedemptionCode {
                hash: hasher.hash(code.expose()),
                prefix: code.prefix(),
                amount,
                created_at: Timestamp::now(),
                expires_at,
            })
            .collect();
        self.store.create_redemption_codes(&rows).await.expect("codes stored");
        codes.iter().map(|code| code.expose().to_owned()).collect()
    }
}
