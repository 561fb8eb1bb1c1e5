//! Everything the CLI prints. The binary is the only place that writes to stdout:
//! results go to stdout (tables, or JSON with `--json`), diagnostics to stderr.
//!
//! Writes never panic: `println!` does when the reader has gone (`veil admin logs |
//! head`, or a supervisor that closed the server's stderr), and a relay must not die
//! because nobody reads its notes.

use serde_json::Value;
use std::io::Write;

fn out(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

pub fn json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => out(&text),
        Err(error) => err(&format!("cannot render JSON: {error}")),
    }
}

pub fn line(text: &str) {
    out(text);
}

pub fn note(text: &str) {
    err(text);
}

pub fn error(text: &str) {
    err(&format!("error: {text}"));
}

/// A plain left-aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    out(&render(headers.iter().map(|h| (*h).to_owned()).collect()));
    for row in rows {
        out(&render(row.clone()));
    }
}
