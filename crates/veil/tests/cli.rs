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
            "--tpm",
            "90000",
            "--max-concurrent",
            "4",
            "--quota",
            "12.5",
            "--daily-spend",
            "1",
            "--monthly-spend",
            "20.000000001",
            "--ip-allow",
            "127.0.0.1/32,10.0.0.0/8",
        ],
    );
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with("sk-veil-"));
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["models"][0], "veil-echo");
    assert_eq!(key["rpm"], 60);
    assert_eq!(key["tpm"], 90_000);
    assert_eq!(key["max_concurrent"], 4);
    assert_eq!(key["quota"], "12.5");
    assert_eq!(key["daily_spend"], "1.0");
    assert_eq!(key["monthly_spend"], "20.000000001");
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
        format!("[[channel]]\nname = \"down\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodels = [\"m\"]\nconnect_timeout = \"2s\"\n\n[[model]]\nname = \"m\"\nfree = true\n"),
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
    assert_eq!(purged["purged_media"], 0);
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

/// Polls `chat` until it answers `status`; a deadline only so a broken build fails
/// instead of hanging (propagation within 2 s is checked elsewhere).
fn chat_until(address: &str, key: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = chat(address, key);
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "still {got} instead of {status}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn admin_suspends_and_unsuspends_a_key_and_a_running_server_follows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    veil_json(d, &["admin", "user", "add", "sam", "--json"]);
    let key = veil_json(d, &["admin", "key", "create", "--user", "sam", "--json"]);
    let (id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    assert!(key["suspended_at"].is_null());
    let (mut server, _) = Server::start(d, &[], &[("VEIL_SERVER__LISTEN", "127.0.0.1:0")]);
    chat_until(&server.address, secret, 200);

    let suspended = veil_json(d, &["admin", "key", "suspend", id, "--json"]);
    assert_eq!(suspended["id"], id);
    assert_eq!(suspended["suspended"], true);
    assert!(suspended["suspended_at"].is_string());
    let listed = veil_json(d, &["admin", "key", "list", "--json"]);
    assert_eq!(listed[0]["suspended_at"], suspended["suspended_at"]);
    let table = veil(d, &["admin", "key", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("suspended"), "no suspended marker in the listing");

    let refused = chat_until(&server.address, secret, 403);
    assert_eq!(refused["error"]["code"], "key_suspended");
    assert_eq!(refused["error"]["type"], "permission_error");
    // The owner can still see why, with the suspended key itself.
    let risk: Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/me/risk", server.address))
        .bearer_auth(secret)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(risk["keys"][0]["suspended"], true, "{risk}");
    assert_eq!(risk["events"][0]["action"], "key.suspend");
    assert_eq!(risk["events"][0]["actor"], "cli");
    assert_eq!(risk["events"][0]["key_id"], id);

    let lifted = veil_json(d, &["admin", "key", "unsuspend", id, "--json"]);
    assert_eq!(lifted["suspended"], false);
    assert!(lifted["suspended_at"].is_null());
    chat_until(&server.address, secret, 200);
    assert!(server.terminate().success());

    let audit = veil_json(d, &["admin", "audit", "list", "--json"]);
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == id)
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(actions[..2], [("key.unsuspend", "cli"), ("key.suspend", "cli")], "{actions:?}");
    let unknown = "0190a0a0-0000-7000-8000-000000000000";
    assert!(!veil(d, &["admin", "key", "suspend", unknown]).status.success());
    assert!(!veil(d, &["admin", "key", "unsuspend", unknown]).status.success());
    assert!(!veil(d, &["admin", "key", "suspend", "not-an-id"]).status.success());
}

#[test]
fn redemption_codes_are_printed_once_stored_hashed_listed_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = veil_json(d, &["admin", "code", "create", "5", "--count", "3", "--expires", "30d", "--json"]);
    assert_eq!(created["amount"], "5.0");
    assert!(created["expires_at"].is_string());
    let mut codes: Vec<String> =
        created["codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 3);
    // Plain output: the codes alone on stdout, one per line (the note goes to stderr).
    let out = veil(d, &["admin", "code", "create", "1.5", "--count", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.lines().count(), 2, "{printed}");
    codes.extend(printed.lines().map(str::to_owned));
    for code in &codes {
        assert!(code.starts_with("veil-") && code.len() == 29, "{code}");
        assert!(code[5..].bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
    }
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5);

    // No code is anywhere on disk: only keyed hashes and prefixes are stored.
    for entry in walk(&d.join("veil-data")) {
        let bytes = std::fs::read(&entry).unwrap();
        for code in &codes {
            assert!(!contains(&bytes, &code.as_bytes()[5..]), "a code was found in {}", entry.display());
        }
    }

    let listed = veil_json(d, &["admin", "code", "list", "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0]["amount"], "1.5", "newest first");
    assert_eq!(listed[4]["amount"], "5.0");
    assert!(listed[4]["expires_at"].is_string() && listed[0]["expires_at"].is_null());
    for entry in listed {
        assert_eq!(entry["status"], "active");
        assert!(entry["redeemed_by"].is_null());
        let prefix = entry["prefix"].as_str().unwrap();
        assert!(prefix.len() == 9 && codes.iter().any(|c| c.starts_with(prefix)), "{entry}");
    }
    let text = veil(d, &["admin", "code", "list"]);
    assert!(text.status.success());
    let shown = format!("{}{}", serde_json::to_string(&listed).unwrap(), String::from_utf8_lossy(&text.stdout));
    assert!(codes.iter().all(|c| !shown.contains(&c[9..])), "a listing shows a code");

    // One audit entry per batch, with count and amount, never a code.
    let audit = veil_json(d, &["admin", "audit", "list", "--json"]);
    let batches: Vec<&Value> = audit.as_array().unwrap().iter().filter(|a| a["action"] == "code.create").collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0]["details"]["count"], 2);
    assert_eq!(batches[0]["details"]["amount"], "1.5");
    assert_eq!(batches[1]["details"]["count"], 3);
    assert_eq!(batches[1]["details"]["amount"], "5.0");
    assert!(batches[1]["details"]["expires_at"].is_string());
    assert!(codes.iter().all(|c| !audit.to_string().contains(&c[9..])), "the audit log holds a code");

    // Bad amounts, counts and expiries create nothing.
    for args in [
        &["0"][..],
        &["-1"],
        &["lots"],
        &["1.0000000001"],
        &["1", "--count", "0"],
        &["1", "--count", "10001"],
        &["1", "--expires", "2000-01-01T00:00:00Z"],
        &["1", "--expires", "soon"],
    ] {
        let out = veil(d, &[&["admin", "code", "create"][..], args].concat());
        assert!(!out.status.success(), "accepted: {args:?}");
        assert!(out.stdout.is_empty(), "printed something for {args:?}");
    }
    assert_eq!(veil_json(d, &["admin", "code", "list", "--json"]).as_array().unwrap().len(), 5);
}

#[test]
fn a_code_made_by_the_cli_is_redeemed_by_the_server_and_listed_as_redeemed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    veil_json(d, &["admin", "user", "add", "rita", "--json"]);
    let key = veil_json(d, &["admin", "key", "create", "--user", "rita", "--json"]);
    let code = veil_json(d, &["admin", "code", "create", "2.5", "--json"])["codes"][0].as_str().unwrap().to_owned();
    let (server, _) = Server::start(d, &[], &[("VEIL_SERVER__LISTEN", "127.0.0.1:0")]);
    let redeem = |code: &str| {
        reqwest::blocking::Client::new()
            .post(format!("{}/api/redeem", server.address))
            .bearer_auth(key["secret"].as_str().unwrap())
            .json(&serde_json::json!({"code": code}))
            .send()
            .unwrap()
    };
    let response = redeem(&code);
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body["credited"], "2.5");
    assert_eq!(body["balance"], "2.5");
    assert_eq!(redeem(&code).status().as_u16(), 400, "a code is spent once");

    let listed = veil_json(d, &["admin", "code", "list", "--json"]);
    assert_eq!(listed[0]["status"], "redeemed");
    assert_eq!(listed[0]["redeemed_by"], "rita");
    assert!(listed[0]["redeemed_at"].is_string());
    let users = veil_json(d, &["admin", "user", "list", "--json"]);
    assert_eq!(users[0]["balance"], "2.5");
}

#[test]
fn check_config_names_risk_keys_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("typo.toml"), "[risk]\nnetworks = { max = 5, windw = \"1h\" }\n").unwrap();
    let out = veil(d, &["check-config", "--config", "typo.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("risk.networks.windw"));
    std::fs::write(d.join("bad.toml"), "[risk]\nauth_failures = { action = \"suspend\" }\n").unwrap();
    let out = veil(d, &["check-config", "--config", "bad.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("risk.auth_failures.action"));
    std::fs::write(d.join("good.toml"), "[risk]\nspend_spike = { factor = 5, action = \"suspend\" }\n").unwrap();
    assert!(veil(d, &["check-config", "--config", "good.toml"]).status.success());
}

/// `admin logs` shows what each call cost and at which multiplier, and `--key` keeps one
/// key's calls. The records go straight into the store, with known costs.
#[test]
fn admin_logs_show_cost_and_multiplier_and_filter_by_key() {
    use veil_domain::{CallRecord, KeyId, Money, Multiplier, Timestamp, TokenUsage};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    veil_json(d, &["admin", "user", "add", "alice", "--json"]);
    let first = veil_json(d, &["admin", "key", "create", "--user", "alice", "--json"]);
    let second = veil_json(d, &["admin", "key", "create", "--user", "alice", "--json"]);
    let (first, second) = (first["id"].as_str().unwrap().to_owned(), second["id"].as_str().unwrap().to_owned());
    let url = format!("sqlite://{}/veil-data/veil.db", d.display());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = veil_store::connect(&url, 1).await.unwrap();
        let alice = store.user_by_name(&"alice".parse().unwrap()).await.unwrap().unwrap();
        let record = |id: &str, key: &str, cost: &str, multiplier: i64, time: i64| CallRecord {
            request_id: id.parse().unwrap(),
            time: Timestamp::from_unix_millis(time),
            user_id: Some(alice.id),
            key_id: Some(KeyId::parse(key).unwrap()),
            group: Some("default".parse().unwrap()),
            model: Some("gpt-4o-mini".parse().unwrap()),
            upstream_model: None,
            channel: None,
            path: "/v1/chat/completions",
            stream: false,
            usage: TokenUsage { input_tokens: 10, output_tokens: 5, ..TokenUsage::default() },
            cost: Money::parse_decimal(cost).unwrap(),
            multiplier: Multiplier::from_millionths(multiplier),
            status: 200,
            error_code: None,
            latency_ms: 42,
            ttft_ms: None,
            client_ip: String::new(),
            user_agent: String::new(),
            redactions: 0,
            rule_id: None,
            policy_class: None,
            estimated: false,
            channels_tried: Vec::new(),
        };
        let now = Timestamp::now().unix_millis();
        let records = [
            record("req-first", &first, "0.000123", 1_250_000, now - 2_000),
            record("req-second", &second, "0.5", 2_000_000, now - 1_000),
        ];
        store.insert_call_records(&records, &[]).await.unwrap();
    });

    let only_first = veil_json(d, &["admin", "logs", "--key", &first, "--json"]);
    let only_first = only_first.as_array().unwrap();
    assert_eq!(only_first.len(), 1, "{only_first:?}");
    assert_eq!(only_first[0]["request_id"], "req-first");
    assert_eq!(only_first[0]["key_id"], first.as_str());
    assert_eq!(only_first[0]["cost"], "0.000123");
    assert_eq!(only_first[0]["multiplier"], "1.25");

    let out = veil(d, &["admin", "logs"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("COST") && lines[0].contains("MULTIPLIER"), "{table}");
    assert!(lines[1].contains("0.5") && lines[1].contains("x2.0"), "{table}");
    assert!(lines[2].contains("0.000123") && lines[2].contains("x1.25"), "{table}");
    assert!(!veil(d, &["admin", "logs", "--key", "not-a-key"]).status.success());
}

#[test]
fn channels_are_disabled_and_enabled_from_the_command_line_with_their_state_shown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = veil(d, &["admin", "channel", "list"]);
    assert!(table.status.success());
    let header = String::from_utf8(table.stdout).unwrap();
    let header = header.lines().next().unwrap();
    for column in ["STATE", "ERROR RATE", "P50"] {
        assert!(header.contains(column), "{header}");
    }
    let listed = veil_json(d, &["admin", "channel", "list", "--json"]);
    assert_eq!(listed[0]["state"], "healthy");
    assert_eq!(listed[0]["error_rate"], 0.0);
    assert_eq!(listed[0]["disabled_reason"], Value::Null);

    let disabled = veil_json(d, &["admin", "channel", "disable", "echo", "--json"]);
    assert_eq!(disabled["state"], "disabled");
    assert_eq!(disabled["disabled_reason"], "admin");
    let table = String::from_utf8(veil(d, &["admin", "channel", "list"]).stdout).unwrap();
    assert!(table.contains("disabled (admin)"), "{table}");
    // Disabling twice keeps the first; enabling brings it back.
    assert!(veil(d, &["admin", "channel", "disable", "echo"]).status.success());
    let enabled = veil_json(d, &["admin", "channel", "enable", "echo", "--json"]);
    assert_eq!(enabled["state"], "healthy");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert!(!veil(d, &["admin", "channel", "enable", "nope"]).status.success());

    let audit = veil_json(d, &["admin", "audit", "list", "--json"]);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "channel.disable").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "channel.enable").count(), 1, "{actions:?}");
}
