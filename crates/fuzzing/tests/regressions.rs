//! Replays, on stable and in the normal test suite, every input the fuzzers ever found a bug
//! with (`crates/fuzzing/regressions/<target>/`) and every seed of their corpora
//! (`fuzz/corpus/<target>/`), through the same target functions cargo-fuzz runs; plus
//! proptests that drive the targets with random bytes and with mutated seeds, so the harness
//! itself runs in CI without a nightly toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::Value;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use veil_fuzzing::{TARGETS, Target};
use veil_protocol::translate::{self, RouteHints, StreamTranslator, UpstreamFormat};
use veil_protocol::{ClientFormat, SseParser};

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions")
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// The files directly under `dir` (none when it does not exist), sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

/// Sub-directory names of `dir`.
fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn target(name: &str) -> Target {
    veil_fuzzing::target(name).unwrap_or_else(|| panic!("no fuzz target called {name}"))
}

/// Runs `name` on every file of its regression directory and its seed corpus, naming every
/// file that makes it panic.
fn replay(name: &str) {
    let target = target(name);
    let seeds = files_in(&corpus_dir().join(name));
    assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed inputs");
    let mut failures = Vec::new();
    for path in files_in(&regressions_dir().join(name)).into_iter().chain(seeds) {
        let input = std::fs::read(&path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(failures.is_empty(), "{name} fails on: {failures:#?}");
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let replayed = [$(stringify!($name)),*];
            for (name, _) in TARGETS {
                assert!(replayed.contains(name), "add {name} to replay_tests!");
            }
        }
    };
}

replay_tests!(
    sse_parser,
    openai_chat_request,
    responses_request,
    anthropic_request,
    gemini_request,
    upstream_responses,
    bedrock_eventstream,
    pii_redactor,
);

#[test]
fn every_input_directory_names_a_target() {
    for dir in [regressions_dir(), corpus_dir()] {
        for name in subdirs(&dir) {
            assert!(veil_fuzzing::target(&name).is_some(), "{} names no fuzz target", dir.join(name).display());
        }
    }
}

/// The request seeds must get past the parsers' first checks, or fuzzing starts from nothing.
#[test]
fn request_seeds_are_accepted() {
    let formats = [
        ("openai_chat_request", ClientFormat::OpenAiChat),
        ("responses_request", ClientFormat::OpenAiResponses),
        ("anthropic_request", ClientFormat::Anthropic),
        ("gemini_request", ClientFormat::Gemini),
    ];
    let hints = RouteHints { model: Some("gemini-2.5-flash"), stream: false };
    for (name, format) in formats {
        for path in files_in(&corpus_dir().join(name)) {
            let body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let translated = translate::client_request(format, &body, hints);
            assert!(translated.is_ok(), "{} is refused: {translated:?}", path.display());
        }
    }
}

/// Likewise every stream seed of `upstream_responses` is a whole stream of its vendor.
#[test]
fn upstream_stream_seeds_complete() {
    let formats = [
        ("openai_chat_", UpstreamFormat::OpenAiChat),
        ("anthropic_", UpstreamFormat::Anthropic),
        ("gemini_", UpstreamFormat::Gemini),
        ("bedrock_", UpstreamFormat::Bedrock),
    ];
    let streams = files_in(&corpus_dir().join("upstream_responses"));
    let streams: Vec<_> = streams.iter().filter(|path| path.extension().is_some_and(|ext| ext == "sse")).collect();
    assert!(!streams.is_empty());
    for path in streams {
        let file = path.file_name().unwrap().to_string_lossy();
        let (_, format) = formats.iter().find(|(prefix, _)| file.starts_with(prefix)).unwrap();
        let events = SseParser::new().push(&std::fs::read(path).unwrap()).unwrap();
        let mut translator = StreamTranslator::from_upstream(*format, "model");
        let mut out = Vec::new();
        for event in &events {
            translator.push(event, &mut out).unwrap();
        }
        assert!(translator.is_complete(), "{file} does not complete");
    }
}

/// Every seed of every target, read once.
static SEEDS: LazyLock<Vec<(Target, Vec<u8>)>> = LazyLock::new(|| {
    TARGETS
        .iter()
        .flat_map(|&(name, target)| {
            files_in(&corpus_dir().join(name)).into_iter().map(move |path| (target, std::fs::read(path).unwrap()))
        })
        .collect()
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random bytes: mostly rejected early, which must be done without panicking.
    #[test]
    fn targets_survive_random_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        for (_, target) in TARGETS {
            target(&input);
        }
    }

    /// Seeds with a few bytes overwritten, inserted or removed: close enough to real input to
    /// get past the parsers' first checks.
    #[test]
    fn targets_survive_mutated_seeds(
        seed in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let (target, input) = &SEEDS[seed.index(SEEDS.len())];
        let mut input = input.clone();
        for (at, byte, action) in edits {
            let at = at.index(input.len() + 1);
            match action {
                0 if at < input.len() => input[at] = byte,
                1 => input.insert(at, byte),
                _ if at < input.len() => { input.remove(at); }
                _ => input.push(byte),
            }
        }
        target(&input);
    }
}
