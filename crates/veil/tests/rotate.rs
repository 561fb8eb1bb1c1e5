//! `veil admin rotate-master-key`: rotation without downtime (DESIGN §3.8).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, contains, veil, veil_json};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use veil_secrets::{KEY_HASH_PURPOSE, MasterKey};
use veil_store::WrappedSecret;

fn chat_status(address: &str, key: &str) -> u16 {
    reqwest::blocking::Client::new()
        .post(format!("{address}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": "veil-echo", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (briefly) for the server to accept the key.
fn assert_accepted(address: &str, key: &str) {
    let started = Instant::now();
    loop {
        let status = chat_status(address, key);
        if status == 200 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "key refused: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(d: &Path) -> Server {
    Server::start(d, &[], &[("VEIL_SERVER__LISTEN", "127.0.0.1:0")]).0
}

fn all_secret_rows(d: &Path) -> Vec<WrappedSecret> {
    let db = format!("sqlite://{}", d.join("veil-data/veil.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = veil_store::connect(&db, 1).await.unwrap();
        store.list_wrapped_secrets().await.unwrap()
    })
}

/// The copies of the API-key hashing key (a running server also keeps others, such as
/// the debug-capture key; they rotate the same way).
fn secret_rows(d: &Path) -> Vec<WrappedSecret> {
    all_secret_rows(d).into_iter().filter(|r| r.purpose == KEY_HASH_PURPOSE).collect()
}

fn read_key(path: &Path) -> MasterKey {
    let text = std::fs::read_to_string(path).unwrap();
    MasterKey::load_or_create(Some(text.trim()), Path::new("/nonexistent")).unwrap()
}

#[test]
fn rotating_the_key_file_keeps_running_and_restarted_servers_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("veil-data");
    veil_json(d, &["admin", "user", "add", "bob", "--json"]);
    let key = veil_json(d, &["admin", "key", "create", "--user", "bob", "--json"]);
    let secret = key["secret"].as_str().unwrap().to_owned();
    let before = std::fs::read(data.join("master.key")).unwrap();
    let old = read_key(&data.join("master.key"));

    let mut server = start(d);
    assert_accepted(&server.address, &secret);

    let purposes = all_secret_rows(d).len();
    let rotated = veil_json(d, &["admin", "rotate-master-key", "--json"]);
    assert_eq!(rotated["old_key_id"], old.id());
    assert_ne!(rotated["new_key_id"], rotated["old_key_id"]);
    assert_eq!(rotated["rewrapped"], purposes);
    assert_eq!(all_secret_rows(d).len(), 2 * purposes, "every installation key gets a new-key copy");
    assert!(rotated.get("new_key").is_none(), "file mode must not print the key: {rotated}");
    assert!(rotated["next"].as_str().unwrap().contains("--finish"));
    let new = read_key(&data.join("master.key"));
    assert_eq!(new.id(), rotated["new_key_id"].as_str().unwrap());
    assert_eq!(std::fs::read(data.join("master.key.old")).unwrap(), before);
    assert!(!data.join("master.key.new").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // One copy per master key, both of the same hashing key.
    let rows = secret_rows(d);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let by = |id: String| rows.iter().find(|r| r.master_key_id == id).unwrap().clone();
    assert_eq!(old.unwrap_secret(&by(old.id())).unwrap(), new.unwrap_secret(&by(new.id())).unwrap());

    // A second start is refused until the first is finished.
    assert!(!veil(d, &["admin", "rotate-master-key"]).status.success());

    // The running server keeps working; a restarted one reads the new key.
    assert_accepted(&server.address, &secret);
    assert!(server.terminate().success());
    let mut server = start(d);
    assert_accepted(&server.address, &secret);

    let finished = veil_json(d, &["admin", "rotate-master-key", "--finish", "--json"]);
    assert_eq!(finished["key_id"], new.id());
    assert_eq!(finished["retired"], purposes, "one old copy per installation key");
    assert_eq!(finished["retired_key_ids"], serde_json::json!([old.id()]));
    assert!(!data.join("master.key.old").exists());
    assert!(all_secret_rows(d).iter().all(|r| r.master_key_id == new.id()));
    let rows = secret_rows(d);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].master_key_id, new.id());
    assert_eq!(rows[0].purpose, KEY_HASH_PURPOSE);

    assert_accepted(&server.address, &secret);
    assert!(server.terminate().success());
    let mut server = start(d);
    assert_accepted(&server.address, &secret);
    assert!(server.terminate().success());

    let audit = veil_json(d, &["admin", "audit", "list", "--json"]);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"master_key.rotate") && actions.contains(&"master_key.finish"), "{actions:?}");
    assert_eq!(veil_json(d, &["admin", "audit", "verify", "--json"])["intact"], true);

    // The database alone holds neither the hashing key nor any master key.
    let hashing_key = new.unwrap_secret(&rows[0]).unwrap();
    let mut db_bytes = Vec::new();
    for file in common::walk(&data) {
        if file.file_name().unwrap().to_string_lossy().starts_with("veil.db") {
            db_bytes.extend(std::fs::read(&file).unwrap());
        }
    }
    assert!(!db_bytes.is_empty());
    assert!(!contains(&db_bytes, &hashing_key), "the hashing key is in the database");
    let hex: String = hashing_key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!contains(&db_bytes, hex.as_bytes()));
    for master in [&old, &new] {
        let encoded = master.to_base64();
        assert!(!contains(&db_bytes, encoded.as_bytes()), "a master key is in the database");
        let raw: [u8; 32] = decode_base64(encoded.as_str()).try_into().unwrap();
        assert_eq!(MasterKey::from_bytes(raw).id(), master.id());
        assert!(!contains(&db_bytes, &raw), "a master key is in the database");
    }
}

fn veil_env(d: &Path, master_key: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .current_dir(d)
        .env("VEIL_MASTER_KEY", master_key)
        .env_remove("VEIL_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "veil {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rotating_an_environment_key_prints_the_new_one_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = MasterKey::generate().to_base64().to_string();
    veil_env(d, &old, &["admin", "user", "add", "eve", "--json"]);
    let secret = veil_env(d, &old, &["admin", "key", "create", "--user", "eve", "--json"])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = veil_env(d, &old, &["admin", "rotate-master-key", "--json"]);
    assert_eq!(rotated["rewrapped"], 1);
    let new = rotated["new_key"].as_str().unwrap().to_owned();
    assert_eq!(read_key_text(&new).id(), rotated["new_key_id"].as_str().unwrap());
    assert!(!d.join("veil-data/master.key").exists() && !d.join("veil-data/master.key.new").exists());

    // Finishing with the new key deletes the old copy; the API key still hashes the same.
    let finished = veil_env(d, &new, &["admin", "rotate-master-key", "--finish", "--json"]);
    assert_eq!(finished["retired"], 1);
    let mut server = Server::start(d, &[], &[("VEIL_SERVER__LISTEN", "127.0.0.1:0"), ("VEIL_MASTER_KEY", &new)]).0;
    assert_accepted(&server.address, &secret);
    assert!(server.terminate().success());
    // The old key now fails to start, naming both key ids.
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["admin", "key", "create", "--user", "eve"])
        .current_dir(d)
        .env("VEIL_MASTER_KEY", &old)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&read_key_text(&old).id()) && said.contains(&read_key_text(&new).id()), "{said}");
}

fn read_key_text(text: &str) -> MasterKey {
    MasterKey::load_or_create(Some(text), Path::new("/nonexistent")).unwrap()
}

/// Standard base64 (the veil crate has no base64 dependency).
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}
