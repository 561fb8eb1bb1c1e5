//! `/console/notifications`: each user chooses which categories of notification mail they
//! receive (security, spending, key expiry, and channel health for admins) and the balance
//! below which they are warned. The choices live in the store; the notifier reads them
//! when it mails (see `notify.rs`).

use super::session::{SignedIn, SignedInForm};
use super::{ConsoleError, admin, layout, render};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use veil_console::pages::{Flash, NotificationsPage};
use veil_domain::{Money, Timestamp};
use veil_store::NotificationPreferences;

fn view(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    flash: Flash,
    chosen: &NotificationPreferences,
    balance_alert: String,
) -> Result<Response, ConsoleError> {
    let page = NotificationsPage {
        layout: layout(who, "Notifications", "notifications"),
        flash,
        security: chosen.security,
        spending: chosen.spending,
        key_expiry: chosen.key_expiry,
        channel_health: chosen.channel_health,
        balance_alert,
        currency: state.currency.clone(),
        mail_enabled: state.notifier.mails(),
    };
    Ok((status, render(&page)?).into_response())
}

pub async fn page(State(state): State<Arc<AppState>>, who: SignedIn) -> Result<Response, ConsoleError> {
    let chosen = state.store.notification_preferences(who.user.id).await?;
    let threshold = chosen.balance_alert.map(Money::to_decimal_string).unwrap_or_default();
    view(&state, &who, StatusCode::OK, Flash::default(), &chosen, threshold)
}

pub async fn save(State(state): State<Arc<AppState>>, form: SignedInForm) -> Result<Response, ConsoleError> {
    let who = &form.who;
    let ticked = |name: &str| form.form.contains_key(name);
    let previous = state.store.notification_preferences(who.user.id).await?;
    let threshold = form.field("balance_alert");
    let mut chosen = NotificationPreferences {
        security: ticked("security"),
        spending: ticked("spending"),
        key_expiry: ticked("key_expiry"),
        // Only admins see the box; others keep what they had.
        channel_health: if admin::is_admin(&who.user) { ticked("channel_health") } else { previous.channel_health },
        balance_alert: None,
    };
    if !threshold.is_empty() {
        match Money::parse_decimal(threshold) {
            Ok(amount) if !amount.is_negative() => chosen.balance_alert = Some(amount),
            _ => {
                let flash =
                    Flash { notice: None, error: Some("The balance alert must be an amount, like 5 or 2.50.".into()) };
                return view(&state, who, StatusCode::BAD_REQUEST, flash, &chosen, threshold.to_owned());
            }
        }
    }
    state.store.set_notification_preferences(who.user.id, &chosen, Timestamp::now()).await?;
    let flash = Flash { notice: Some("Your notification choices were saved.".into()), error: None };
    let shown = chosen.balance_alert.map(Money::to_decimal_string).unwrap_or_default();
    view(&state, who, StatusCode::OK, flash, &chosen, shown)
}
