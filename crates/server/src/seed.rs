//! Applying the config file's `[[group]]`, `[[channel]]` and `[[model]]` to the store.
//! Items from the file are marked managed; managed items no longer in the file are
//! retired. Only what differs is written, so an unchanged config causes no store
//! revision and no cache reload on running servers. Every change is audited.

use veil_config::Settings;
use veil_domain::Group;
use veil_store::{Store, StoreError};

pub async fn apply_config(store: &dyn Store, settings: &Settings) -> Result<(), StoreError> {
    let existing_groups = store.list_groups().await?;
    let mut groups = settings.groups.clone();
    let default = Group::builtin_default();
    if !groups.iter().any(|g| g.name == default.name) && !existing_groups.iter().any(|g| g.name == default.name) {
        groups.push(default);
    }
    for group in &groups {
        if !existing_groups.contains(group) {
            store.upsert_group(group).await?;
            audit_change(store, "group.apply", group.name.as_str()).await?;
        }
    }
    let keep: Vec<_> = settings.groups.iter().map(|g| g.name.clone()).collect();
    if existing_groups.iter().any(|g| g.managed && !keep.contains(&g.name)) {
        store.retire_managed_groups(&keep).await?;
        audit_change(store, "group.retire", "managed groups no longer in the config").await?;
    }

    let existing_channels = store.list_channels().await?;
    for channel in &settings.channels {
        if !existing_channels.contains(channel) {
            store.upsert_channel(channel).await?;
            audit_change(store, "channel.apply", channel.name.as_str()).await?;
        }
    }
    let keep: Vec<_> = settings.channels.iter().map(|c| c.name.clone()).collect();
    if existing_channels.iter().any(|c| c.managed && !keep.contains(&c.name)) {
        store.retire_managed_channels(&keep).await?;
        audit_change(store, "channel.retire", "managed channels no longer in the config").await?;
    }

    let existing_models = store.list_models().await?;
    for model in &settings.models {
        if !existing_models.contains(model) {
            store.upsert_model(model).await?;
            audit_change(store, "model.apply", model.name.as_str()).await?;
        }
    }
    let keep: Vec<_> = settings.models.iter().map(|m| m.name.clone()).collect();
    if existing_models.iter().any(|m| m.managed && !keep.contains(&m.name)) {
        store.retire_managed_models(&keep).await?;
        audit_change(store, "model.retire", "managed models no longer in the config").await?;
    }
    Ok(())
}

/// Policy, channel and price changes are audited like admin actions; the actor is the
/// config file.
async fn audit_change(store: &dyn Store, action: &str, target: &str) -> Result<(), StoreError> {
    crate::account::audit(store, "config".to_owned(), action, None, Some(target.to_owned()), serde_json::json!({}))
        .await
        .map(|_| ())
}
