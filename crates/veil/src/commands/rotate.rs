//! `veil admin rotate-master-key [--finish]` (DESIGN §3.8): master-key rotation without
//! downtime. The first step adds copies of every installation secret wrapped by a new key and
//! installs that key; running instances keep their unwrapped keys in memory and instances not
//! yet restarted still find the old key's copies. `--finish`, once every instance runs with
//! the new key, deletes the copies any other master key wrapped.

use crate::output;
use anyhow::Context;
use serde_json::json;
use std::process::ExitCode;
use veil_config::Settings;
use veil_secrets::{MASTER_KEY_ENV, MasterKey};
use veil_server::account;
use veil_store::Store;

pub async fn run(settings: &Settings, store: &dyn Store, finish: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let env_value = std::env::var(MASTER_KEY_ENV).ok();
    let current = MasterKey::load_or_create(env_value.as_deref(), &settings.data_dir)?;
    // Creates the installation keys on a fresh installation, so there is something to rotate,
    // and checks the current key actually unwraps what the store holds.
    veil_secrets::key_hasher(store, &current).await.context("the current master key cannot be used")?;
    if finish {
        finish_rotation(settings, store, &current, env_value.is_some(), as_json).await
    } else {
        start_rotation(settings, store, &current, env_value.is_some(), as_json).await
    }
}

async fn start_rotation(
    settings: &Settings,
    store: &dyn Store,
    old: &MasterKey,
    from_env: bool,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    if !from_env && settings.data_dir.join("master.key.old").exists() {
        anyhow::bail!("a previous rotation is not finished: run `veil admin rotate-master-key --finish` first");
    }
    let new = MasterKey::generate();
    let rewrapped = veil_secrets::rotate(store, old, &new).await.context("cannot re-wrap the installation secrets")?;
    let next = if from_env {
        format!(
            "set {MASTER_KEY_ENV} to the new key on every instance and restart them one by one; \
             then run `veil admin rotate-master-key --finish` with the new key"
        )
    } else {
        // Only after every secret has a copy under the new key: whoever starts from now on
        // reads the new key and finds its copies.
        new.replace_key_file(&settings.data_dir)?;
        "restart every instance (they now read the new master.key); then run \
         `veil admin rotate-master-key --finish`"
            .to_owned()
    };
    account::audit(
        store,
        account::actor_cli(),
        "master_key.rotate",
        None,
        Some(new.id()),
        json!({"old_key_id": old.id(), "rewrapped": rewrapped}),
    )
    .await?;
    if as_json {
        let mut report = json!({"old_key_id": old.id(), "new_key_id": new.id(), "rewrapped": rewrapped, "next": next});
        if from_env && let Some(fields) = report.as_object_mut() {
            fields.insert("new_key".to_owned(), json!(new.to_base64().as_str()));
        }
        output::json(&report);
    } else {
        output::line(&format!("master key {} → {}: {rewrapped} secret(s) re-wrapped", old.id(), new.id()));
        if from_env {
            output::line(&format!("new {MASTER_KEY_ENV} (shown once, keep it secret): {}", new.to_base64().as_str()));
        } else {
            output::line(&format!(
                "{} now holds the new key; the old one is in master.key.old",
                settings.data_dir.join("master.key").display()
            ));
        }
        output::line(&format!("next: {next}"));
    }
    Ok(ExitCode::SUCCESS)
}

async fn finish_rotation(
    settings: &Settings,
    store: &dyn Store,
    current: &MasterKey,
    from_env: bool,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let (retired, deleted) =
        veil_secrets::retire_all_but(store, current).await.context("cannot finish the rotation")?;
    let removed_old_file = if from_env { false } else { MasterKey::remove_old_key_file(&settings.data_dir)? };
    account::audit(
        store,
        account::actor_cli(),
        "master_key.finish",
        None,
        Some(current.id()),
        json!({"old_key_id": retired, "retired": deleted}),
    )
    .await?;
    if as_json {
        output::json(&json!({
            "key_id": current.id(),
            "retired_key_ids": retired,
            "retired": deleted,
            "removed_old_key_file": removed_old_file,
        }));
    } else {
        output::line(&format!(
            "master key {}: {deleted} copy(ies) wrapped by {} deleted{}",
            current.id(),
            if retired.is_empty() { "older keys".to_owned() } else { retired.join(", ") },
            if removed_old_file { "; master.key.old removed" } else { "" }
        ));
    }
    Ok(ExitCode::SUCCESS)
}
