//! Shared helpers for the tests that run the compiled `veil` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::zombie_processes)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn veil(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .current_dir(dir)
        .env_remove("VEIL_MASTER_KEY")
        .env_remove("VEIL_CONFIG")
        .output()
        .expect("veil runs")
}

pub fn veil_json(dir: &Path, args: &[&str]) -> Value {
    let out = veil(dir, args);
    assert!(out.status.success(), "veil {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("veil {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

pub struct Server {
    pub child: Child,
    pub address: String,
    /// Every line the server wrote to stdout or stderr so far.
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// `veil serve` in `dir`, with `args`; waits for its "listening" line.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Server, Vec<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .env_remove("VEIL_MASTER_KEY")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("veil serve starts");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stdout_lines = std::sync::Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                stdout_lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let stderr_lines = std::sync::Arc::clone(&output);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the test stops listening, so the server never writes
            // into a closed pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                stderr_lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("veil serve did not report its address; it said: {lines:#?}")
            });
            if let Some(address) = line.strip_prefix("Veil listening on ") {
                let address = address.trim().to_owned();
                lines.push(line);
                // Keep reading the rest for the caller, briefly.
                while let Ok(more) = rx.recv_timeout(Duration::from_millis(300)) {
                    lines.push(more);
                }
                return (Server { child, address, output }, lines);
            }
            lines.push(line);
        }
    }

    /// Everything written so far; call after `terminate` for the complete output.
    pub fn captured_stderr(&self) -> String {
        // The reader threads finish when the process exits; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
        self.output.lock().unwrap().join("\n")
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "veil did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
