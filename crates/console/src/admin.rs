//! The admin pages' view models (`/console/admin/…`): channels, models and prices, groups,
//! users, redemption codes, the audit log and the settings view. Display-ready strings
//! only; no field can hold request or response content, a channel credential or a
//! redemption code after the response that created it.

use crate::pages::{Figure, Flash, Layout};
use askama::Template;

#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub name: String,
    pub kind: String,
    pub models: String,
    pub priority: String,
    pub weight: String,
    pub class: String,
    /// `healthy`, `cooling_down`, `half_open` or `disabled` (with its reason).
    pub state: String,
    pub error_rate: String,
    pub p50: String,
    pub cooling_until: String,
    /// "set" or "not set": never the credential.
    pub credential: String,
    /// Declared in the config file: shown read-only.
    pub managed: bool,
    pub disabled: bool,
}

#[derive(Template)]
#[template(path = "admin_channels.html")]
pub struct ChannelsPage {
    pub layout: Layout,
    pub flash: Flash,
    pub channels: Vec<ChannelRow>,
}

/// A channel form's fields as text, as the admin typed them or as the channel is.
#[derive(Debug, Clone, Default)]
pub struct ChannelFields {
    pub name: String,
    pub kind: String,
    pub base_url: String,
    pub api_key_env: String,
    pub models: String,
    /// One `public=upstream` pair a line.
    pub model_mapping: String,
    pub priority: String,
    pub weight: String,
    pub groups: String,
    pub retention: String,
    pub training: bool,
    pub region: String,
    pub human_review: bool,
    pub operator: String,
    pub connect_timeout: String,
    pub first_byte_timeout: String,
    pub idle_timeout: String,
    pub total_timeout: String,
    pub rpm: String,
    pub max_concurrent: String,
    pub tls_verify: bool,
    pub probe_interval: String,
    pub enabled: bool,
}

#[derive(Template)]
#[template(path = "admin_channel_form.html")]
pub struct ChannelFormPage {
    pub layout: Layout,
    pub flash: Flash,
    /// `None`: a new channel; `Some(name)`: editing that one.
    pub editing: Option<String>,
    pub managed: bool,
    pub fields: ChannelFields,
    /// "set" or "not set".
    pub credential: String,
    pub kinds: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ModelRow {
    pub name: String,
    pub price: String,
    pub input: String,
    pub cached_input: String,
    pub output: String,
    pub per_image: String,
    pub per_second: String,
    pub max_output_tokens: String,
    pub free: bool,
    pub managed: bool,
}

#[derive(Template)]
#[template(path = "admin_models.html")]
pub struct ModelsPage {
    pub layout: Layout,
    pub flash: Flash,
    pub currency: String,
    pub models: Vec<ModelRow>,
}

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub name: String,
    pub multiplier: String,
    pub privacy: String,
    pub limits: String,
    pub spend_caps: String,
    pub screening_rules: String,
    pub managed: bool,
}

#[derive(Template)]
#[template(path = "admin_groups.html")]
pub struct GroupsPage {
    pub layout: Layout,
    pub flash: Flash,
    pub groups: Vec<GroupRow>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupFields {
    pub name: String,
    pub multiplier: String,
    pub firewall: String,
    pub max_retention_days: String,
    pub allow_training: bool,
    pub regions: String,
    pub rpm: String,
    pub tpm: String,
    pub max_concurrent: String,
    pub daily_spend: String,
    pub monthly_spend: String,
    /// One a line.
    pub deny_keywords: String,
    pub deny_patterns: String,
}

#[derive(Template)]
#[template(path = "admin_group_form.html")]
pub struct GroupFormPage {
    pub layout: Layout,
    pub flash: Flash,
    pub editing: bool,
    pub managed: bool,
    pub fields: GroupFields,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub email: String,
    pub role: String,
    pub group: String,
    pub balance: String,
    pub disabled: bool,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
pub struct UsersPage {
    pub layout: Layout,
    pub flash: Flash,
    pub currency: String,
    pub users: Vec<UserRow>,
    pub groups: Vec<String>,
    /// Roles the signed-in admin may hand out (only root makes admins and roots).
    pub roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CodeRow {
    pub prefix: String,
    pub amount: String,
    pub status: String,
    pub created: String,
    pub expires: String,
    pub redeemed_by: String,
}

#[derive(Template)]
#[template(path = "admin_codes.html")]
pub struct CodesPage {
    pub layout: Layout,
    pub flash: Flash,
    pub currency: String,
    /// Codes just made: shown on this one response, never again.
    pub created: Vec<String>,
    pub codes: Vec<CodeRow>,
}

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub seq: String,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
pub struct AuditPage {
    pub layout: Layout,
    pub chain_intact: bool,
    pub chain_status: String,
    pub entries: Vec<AuditRow>,
}

#[derive(Template)]
#[template(path = "admin_settings.html")]
pub struct SettingsPage {
    pub layout: Layout,
    pub settings: Vec<Figure>,
}
