//! Property tests of `meridian_config::parse`, run briefly by `cargo test` and at length by
//! `scripts/fuzz.sh` (every `fuzz_*` test, `PROPTEST_CASES` cases): arbitrary text,
//! TOML-like token soup and mutated sample configs never make it panic, a rejected text
//! gets at least one error, and every error's line:column lies within the text.

use meridian_config::parse;
use proptest::prelude::*;
use proptest::sample::Index;

/// Valid and invalid configs to mutate: the samples and part of the invalid corpus.
const SEEDS: &[&str] = &[
    include_str!("../../examples/minimal.toml"),
    include_str!("../../examples/three-regions.toml"),
    include_str!("../../examples/production.toml"),
    include_str!("../../tests/invalid-configs/01-syntax-error.toml"),
    include_str!("../../tests/invalid-configs/04-wrong-type.toml"),
    include_str!("../../tests/invalid-configs/16-duplicate-backend.toml"),
];

/// Pieces of TOML and of Meridian's schema, for text that gets past the first byte.
const TOKENS: &[&str] = &[
    "\n",
    " ",
    "\t",
    "\r\n",
    "=",
    " = ",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    ".",
    "#",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "\\",
    "\\u",
    "0",
    "-1",
    "1e400",
    "99999999999999999999",
    "inf",
    "nan",
    "true",
    "1979-05-27T07:32:00Z",
    "\"2s\"",
    "\"0ms\"",
    "é",
    "\u{0}",
    "\u{feff}",
    "[node]",
    "region",
    "\"a\"",
    "[regions.a]",
    "[regions.\"é\"]",
    "latitude",
    "longitude",
    "backends",
    "address",
    "\"127.0.0.1:1\"",
    "weight",
    "[listeners]",
    "http",
    "admin",
    "[health_check]",
    "interval",
    "[geoip]",
    "database",
    "overrides",
    "network",
    "\"10.0.0.0/8\"",
    "country",
    "[steering]",
    "policy",
    "[steering.countries]",
    "US",
    "[residency]",
    "countries",
    "[retry]",
    "[reload]",
    "threads",
    "[logging]",
    "level",
];

/// One edit of a text, at a character index.
#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, &'static str),
    InsertChar(Index, char),
    Delete(Index, usize),
    DuplicateLine(Index),
    SwapLines(Index, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), prop::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        2 => (any::<Index>(), any::<char>()).prop_map(|(at, c)| Edit::InsertChar(at, c)),
        4 => (any::<Index>(), 1..12_usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match e {
            Edit::Insert(at, token) => {
                let at = at.index(len).min(chars.len());
                chars.splice(at..at, token.chars());
            }
            Edit::InsertChar(at, c) => chars.insert(at.index(len).min(chars.len()), *c),
            Edit::Delete(at, n) => {
                let at = at.index(len).min(chars.len());
                chars.drain(at..(at + n).min(chars.len()));
            }
            Edit::DuplicateLine(at) | Edit::SwapLines(at, _) => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let i = at.index(lines.len());
                if let Edit::SwapLines(_, other) = e {
                    let j = other.index(lines.len());
                    lines.swap(i, j);
                } else {
                    lines.insert(i, lines[i]);
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

/// Parses `text`; a rejection must carry errors, each placed inside the text.
fn parse_checks_positions(text: &str) -> Result<(), TestCaseError> {
    let Err(errors) = parse(text, "fuzz.toml", None) else {
        return Ok(());
    };
    prop_assert!(!errors.is_empty(), "rejected without an error");
    let lines: Vec<&str> = text.split('\n').collect();
    for e in &errors {
        if let (Some(line), Some(column)) = (e.line, e.column) {
            prop_assert!(
                (1..=lines.len()).contains(&line),
                "line {} of {} lines: {}",
                line,
                lines.len(),
                e
            );
            let width = lines[line - 1].chars().count();
            prop_assert!(
                (1..=width + 1).contains(&column),
                "column {} on line {} of {} characters: {}",
                column,
                line,
                width,
                e
            );
        }
    }
    Ok(())
}

proptest! {
    // The default number of cases; PROPTEST_CASES overrides it (proptest applies the
    // environment on top of this config).
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fuzz_config_parse_arbitrary_text(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|t| t.concat()),
            (prop::sample::select(SEEDS), prop::collection::vec(edit(), 1..8))
                .prop_map(|(seed, edits)| apply(seed, &edits)),
        ]
    ) {
        parse_checks_positions(&text)?;
    }
}

#[test]
fn the_seeds_parse_as_expected() {
    for (i, seed) in SEEDS.iter().enumerate() {
        // The samples are valid; the corpus files are not.
        assert_eq!(parse(seed, "seed.toml", None).is_ok(), i < 3, "seed {i}");
    }
}
