//! Everything the CLI prints. The binary is the only place that writes to stdout:
//! results go to stdout (tables, or JSON with `--json`), diagnostics to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use serde_json::Value;

pub fn json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => error_line(&format!("cannot render JSON: {error}")),
    }
}

pub fn line(text: &str) {
    println!("{text}");
}

pub fn note(text: &str) {
    eprintln!("{text}");
}

pub fn error(text: &str) {
    error_line(&format!("error: {text}"));
}

fn error_line(text: &str) {
    eprintln!("{text}");
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
    println!("{}", render(headers.iter().map(|h| (*h).to_owned()).collect()));
    for row in rows {
        println!("{}", render(row.clone()));
    }
}
