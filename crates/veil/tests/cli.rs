//! The compiled `veil` binary as operators use it: configuration checks, `veil admin`
//! with `--json`, and `veil serve` started with no configuration at all.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod common;

use common::{Server, contains, veil, veil_json, walk};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn check_config_names_unknown_keys_by_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[server]\nlisten = \"127.0.0.1:0\"\n\n[[channel]]\nname = \"a\"\ntype = \"echo\"\nmodels = [\"m\"]\nprioritty = 3\n").unwrap();
    let out = veil(dir.path(), &["check-config", "--config", "bad.toml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("channel[0].prioritty"), "{stderr}");

    std::fs::write(dir.path().join("good.toml"), "[server]\nlisten = \"127.0.0.1:9\"\n").unwrap();
    let out = veil(dir.path(), &["check-config", "--config", "good.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Checking starts nothing and writes nothing.
    assert!(!dir.path().join("veil-data").exists());

    let out = veil(dir.path(), &["--json", "check-config", "--config", "good.toml"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
}

#[test]
fn admin_users_and_keys_round_trip_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = veil_json(d, &["admin", "user", "add", "alice", "--credit", "1.5", "--json"]);
    assert_eq!(created["name"], "alice");
    assert_eq!(created["balance"], "1.5");
    let out = veil(d, &["admin", "user", "add", "alice"]);
    assert!(!out.status.success(), "duplicate user accepted");

    veil_json(d, &["admin", "user", "credit", "alice", "2.25", "--json"]);
    let users = veil_json(d, &["admin", "user", "list", "--json"]);
    let alice = &users.as_array().unwrap()[0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["role"], "user");
    assert_eq!(alice["group"], "default");
    assert_eq!(alice["balance"], "3.75");

    // --json and --config are global: accepted before the subcommand too.
    let key = veil_json(
        d,
        &[
            "--json",
            "admin",
            "key",
            "create",
            "--user",
            "alice",
            "--name",
            "laptop",
            "--models",
            "veil-echo",
            "--expires",
            "30d",
            "--rpm",
            "60",
            "--ip-allow",
            "127.0.0.1/32,10.0.0.0/8",
        ],
    );
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with("sk-veil-"));
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["models"][0], "veil-echo");
    assert_eq!(key["rpm"], 60);
    assert!(key["expires_at"].is_string());

    let keys = veil_json(d, &["admin", "key", "list", "--json"]);
    let listed = &keys.as_array().unwrap()[0];
    assert_eq!(listed["id"], id.as_str());
    assert!(listed.get("secret").is_none(), "a listing must never show a secret");
    assert!(secret.starts_with(listed["prefix"].as_str().unwrap()));

    // The secret is nowhere on disk: not in the database, not in any file.
    for entry in walk(&d.join("veil-data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!contains(&bytes, secret.as_bytes()), "secret found in {}", entry.display());
    }

    veil_json(d, &["admin", "key", "revoke", &id, "--json"]);
    let keys = veil_json(d, &["admin", "key", "list", "--json"]);
    assert!(keys[0]["revoked_at"].is_string());
    assert!(!veil(d, &["admin", "key", "revoke", "0190a0a0-0000-7000-8000-000000000000"]).status.success());
    assert!(!veil(d, &["admin", "user", "credit", "nobody", "1"]).status.success());
    assert!(!veil(d, &["admin", "user", "credit", "alice", "lots"]).status.success());
}

#[test]
fn channel_list_labels_the_echo_test_provider_and_channel_test_calls_it() {
    let dir = tempfile::tempdir().unwrap();
    let channels = veil_json(dir.path(), &["admin", "channel", "list", "--json"]);
    let echo = &channels[0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["test_provider"], true);
    assert_eq!(echo["class"], "self-hosted");
    let probe = veil_json(dir.path(), &["admin", "channel", "test", "echo", "--json"]);
    assert_eq!(probe["ok"], true);
    assert!(probe["latency_ms"].is_number());
}

#[test]
fn channel_test_reports_an_unreachable_upstream() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("veil.toml"),
        format!("[[channel]]\nname = \"down\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodels = [\"m\"]\nconnect_timeout = \"2s\"\n"),
    )
    .unwrap();
    let out = veil(dir.path(), &["admin", "channel", "test", "down", "--config", "veil.toml", "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["error"].as_str().unwrap().len() > 3);
}

fn chat(address: &str, key: &str) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let response = client
        .post(format!("{address}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": "veil-echo", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn serve_with_no_config_then_admin_changes_reach_it_and_sigterm_flushes_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Port 0 through the environment: everything else is the zero-config default.
    let (mut server, said) = Server::start(d, &[], &[("VEIL_SERVER__LISTEN", "127.0.0.1:0")]);
    let said = said.join("\n");
    assert!(said.contains("veil admin user add"), "no first-admin hint in: {said}");
    assert!(d.join("veil-data/veil.db").exists(), "no embedded store created");
    assert!(d.join("veil-data/master.key").exists());

    // A key created after the server started works within 2 seconds…
    veil_json(d, &["admin", "user", "add", "bob", "--json"]);
    let key = veil_json(d, &["admin", "key", "create", "--user", "bob", "--json"]);
    let secret = key["secret"].as_str().unwrap();
    let started = Instant::now();
    loop {
        let (status, body) = chat(&server.address, secret);
        if status == 200 {
            assert_eq!(body["choices"][0]["message"]["content"], "Echo: ping");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "new key not accepted within 2 s: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // …and stops working within 2 seconds of being revoked.
    veil_json(d, &["admin", "key", "revoke", key["id"].as_str().unwrap(), "--json"]);
    let revoked = Instant::now();
    loop {
        let (status, body) = chat(&server.address, secret);
        if status == 401 {
            assert_eq!(body["error"]["code"], "invalid_api_key");
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(2), "revoked key still accepted after 2 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let status = server.terminate();
    assert!(status.success(), "veil exited with {status}");
    let logs = veil_json(d, &["admin", "logs", "--json"]);
    let records = logs.as_array().unwrap();
    assert!(!records.is_empty(), "no call record flushed on SIGTERM");
    let record = &records[0];
    for field in [
        "request_id",
        "time",
        "user",
        "key_id",
        "group",
        "model",
        "upstream_model",
        "channel",
        "path",
        "stream",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "cost",
        "multiplier",
        "status",
        "error_code",
        "latency_ms",
        "ttft_ms",
        "client_ip",
        "user_agent",
        "redactions",
        "rule_id",
        "policy_class",
        "estimated",
        "channels_tried",
    ] {
        assert!(record.get(field).is_some(), "call record lacks {field}: {record}");
    }
    assert_eq!(record["user"], "bob");
    assert_eq!(record["path"], "/v1/chat/completions");
    assert_eq!(record["client_ip"], "127.0.0.0", "default ip_logging is truncated");
}

#[test]
fn the_password_is_read_from_stdin_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["admin", "user", "add", "root", "--role", "admin", "--password-stdin", "--json"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse battery staple\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(user["role"], "admin");
    for entry in walk(&dir.path().join("veil-data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!contains(&bytes, b"correct horse battery staple"), "plaintext password in {}", entry.display());
    }
}

#[test]
fn export_erase_purge_and_the_audit_chain_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    veil_json(d, &["admin", "user", "add", "olga", "--credit", "2", "--json"]);
    let key = veil_json(
        d,
        &[
            "admin",
            "key",
            "create",
            "--user",
            "olga",
            "--allow-training",
            "--max-retention-days",
            "7",
            "--regions",
            "EU,CH",
            "--firewall",
            "pii",
            "--json",
        ],
    );
    assert_eq!(key["allow_training"], true);
    assert_eq!(
        key["privacy"],
        serde_json::json!({"max_retention_days": 7, "regions": ["EU", "CH"], "firewall": "pii"})
    );
    assert!(!veil(d, &["admin", "key", "create", "--user", "olga", "--firewall", "paranoid"]).status.success());

    let export = veil_json(d, &["admin", "export-user", "olga"]);
    assert_eq!(export["account"]["name"], "olga");
    assert_eq!(export["ledger"][0]["amount"], "2.0");
    let actions: Vec<&str> =
        export["audit"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    for action in ["user.create", "user.credit", "key.create", "user.export"] {
        assert!(actions.contains(&action), "{action} not audited: {actions:?}");
    }
    // The consent to training is on the record, with the key it was given for.
    let consent = export["audit"].as_array().unwrap().iter().find(|a| a["action"] == "key.create").unwrap();
    assert_eq!(consent["details"]["allow_training"], true);
    assert_eq!(consent["target"], key["id"]);
    assert!(!export.to_string().contains(key["secret"].as_str().unwrap()));

    let purged = veil_json(d, &["admin", "purge", "--before", "2030-01-01T00:00:00Z", "--json"]);
    assert_eq!(purged["purged_call_records"], 0);
    assert!(!veil(d, &["admin", "purge", "--before", "yesterday"]).status.success());

    let erased = veil_json(d, &["admin", "erase-user", "olga", "--json"]);
    assert_eq!(erased["keys_deleted"], 1);
    assert!(!veil(d, &["admin", "export-user", "olga"]).status.success(), "an erased user can still be exported");

    let verified = veil_json(d, &["admin", "audit", "verify", "--json"]);
    assert_eq!(verified["intact"], true);
    assert!(verified["entries"].as_u64().unwrap() >= 5);

    // Tamper with one entry behind Veil's back: verification must fail and say where.
    let db = format!("sqlite://{}", d.join("veil-data/veil.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::SqliteConnection::connect(&db).await.unwrap();
        sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
            .execute(&mut connection)
            .await
            .unwrap();
    });
    let out = veil(d, &["admin", "audit", "verify", "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_broken"], 2);
}

#[test]
fn calls_still_succeed_when_the_log_sink_goes_away() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    veil_json(d, &["admin", "user", "add", "quinn", "--json"]);
    let key = veil_json(d, &["admin", "key", "create", "--user", "quinn", "--json"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("serve")
        .current_dir(d)
        .env("VEIL_SERVER__LISTEN", "127.0.0.1:0")
        .env_remove("VEIL_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "veil serve exited early");
        if let Some(address) = line.trim().strip_prefix("Veil listening on ") {
            break address.to_owned();
        }
    };
    // Close the read end: every later write to stderr — notes, log lines — fails with
    // EPIPE. Give the server a moment to hit that before calling it.
    drop(stderr);
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = chat(&address, key["secret"].as_str().unwrap());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn config_changes_to_channels_and_prices_are_audited_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = |price: &str| {
        format!(
            "[[channel]]\nname = \"local\"\ntype = \"echo\"\nmodels = [\"m\"]\n\n[[model]]\nname = \"m\"\nprice = {{ input = {price}, output = 1 }}\n"
        )
    };
    std::fs::write(d.join("veil.toml"), config("0.5")).unwrap();
    let count = |action: &str| {
        let entries = veil_json(d, &["--config", "veil.toml", "admin", "audit", "list", "--json", "--limit", "1000"]);
        entries.as_array().unwrap().iter().filter(|e| e["action"] == action).count()
    };
    assert_eq!(count("channel.apply"), 1);
    assert_eq!(count("model.apply"), 1);
    // Unchanged config: nothing new. A price change: one new entry.
    assert_eq!(count("model.apply"), 1);
    std::fs::write(d.join("veil.toml"), config("0.75")).unwrap();
    assert_eq!(count("model.apply"), 2);
    assert_eq!(count("channel.apply"), 1);
}
