//! The config file and the API's stream specs, fuzzed: seeds from `fuzz/corpus/config` (the
//! documentation's examples) and `fuzz/corpus/api_bodies`, changed at random
//! ([`avmon_core::mutate`]). Every input must give a config or errors that say something;
//! never a panic. `AVMON_FUZZ_SECS=N` runs each for N seconds instead.

use std::path::Path;

use avmon_core::mutate;
use avmon_service::config::{parse, StreamConfig};

fn corpus(name: &str) -> Vec<Vec<u8>> {
    mutate::seeds(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(name),
    )
}

#[test]
fn config_files_parse_or_say_why() {
    let seeds = corpus("config");
    let (mut ok, mut refused) = (0, 0);
    let n = mutate::run(&seeds, 100_000, |input| {
        let text = String::from_utf8_lossy(input);
        match parse(&text, "fuzz.toml") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(
                    !e.errors.is_empty() && e.errors.iter().all(|m| !m.trim().is_empty()),
                    "a refusal without a reason for {text:?}"
                );
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    });
    eprintln!("config files: {n} inputs, {ok} taken, {refused} refused");
    assert_eq!(ok + refused, n);
    assert!(
        ok >= seeds.len() / 2,
        "most seeds are valid configs: {ok} of {n}"
    );
    assert!(
        refused > n / 4,
        "mutations are mostly refused: {refused} of {n}"
    );
}

#[test]
fn stream_specs_parse_or_say_why() {
    let seeds = corpus("api_bodies");
    let protocols: Vec<String> = ["udp", "srt", "rtp", "rtsp", "http", "https", "file"]
        .map(String::from)
        .to_vec();
    let (mut ok, mut refused, mut not_json) = (0, 0, 0);
    let n = mutate::run(&seeds, 100_000, |input| {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(input) else {
            not_json += 1;
            return;
        };
        match StreamConfig::from_json(value, &protocols) {
            Ok(c) => {
                assert!(!c.id.is_empty() && !c.url.is_empty());
                ok += 1;
            }
            Err(errors) => {
                assert!(!errors.is_empty() && errors.iter().all(|m| !m.trim().is_empty()));
                refused += 1;
            }
        }
    });
    eprintln!("stream specs: {n} inputs, {ok} taken, {refused} refused, {not_json} not JSON");
    assert!(
        ok > 0 && refused > 0 && not_json > 0,
        "{ok} {refused} {not_json}"
    );
}
