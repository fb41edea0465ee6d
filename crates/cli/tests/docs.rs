//! The documentation cannot drift from the code: every setting, metric family and exit code is
//! documented, the configuration example loads, and relative links point at files that exist.

use nanofaas_cli::exit::Exit;
use nanofaas_control_plane::config::{Config, SETTINGS};
use nanofaas_control_plane::metrics::{Metrics, FUNCTION_FAMILIES, GLOBAL_FAMILIES};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

#[test]
fn every_setting_is_in_the_configuration_reference() {
    let doc = read("docs/configuration.md");
    let mut missing = Vec::new();
    for s in SETTINGS {
        // One table row names the setting, its environment variable and its default.
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", s.key)));
        match row {
            None => missing.push(format!("{} (no row)", s.key)),
            Some(r) => {
                if !r.contains(&format!("`{}`", s.env_var())) {
                    missing.push(format!("{}: env var {}", s.key, s.env_var()));
                }
                if !r.contains(&format!("`{}`", s.default)) {
                    missing.push(format!("{}: default {}", s.key, s.default));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks or misstates: {missing:#?}"
    );
    // And it documents no setting the code does not have.
    for l in doc.lines().filter(|l| l.starts_with("| `")) {
        if let Some(env) = l.split('|').nth(2).map(str::trim) {
            if env.starts_with("`NANOFAAS_") && env != "`NANOFAAS_ENDPOINT`" {
                let key = l.split('`').nth(1).unwrap();
                assert!(
                    SETTINGS.iter().any(|s| s.key == key),
                    "docs/configuration.md documents {key}, which is not a setting"
                );
            }
        }
    }
}

#[test]
fn the_configuration_example_loads() {
    let doc = read("docs/configuration.md");
    let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let dir = std::env::temp_dir().join(format!("nanofaas-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nanofaas.toml");
    std::fs::write(&file, &doc[start..end]).unwrap();
    let cfg = Config::load(Some(&file), &HashMap::new(), &[]);
    std::fs::remove_dir_all(&dir).ok();
    let cfg = cfg.unwrap_or_else(|e| panic!("the example of docs/configuration.md: {e}"));
    assert_eq!(cfg.executions.ttl_ms, 3_600_000);
}

/// The family tables of docs/metrics.md (`| `name` | type | labels | meaning |`) list exactly what
/// `/metrics` emits, with the same types: a family emitted but not documented fails, and so does
/// one documented that is no longer emitted.
#[test]
fn the_metrics_reference_lists_exactly_what_is_emitted() {
    let doc = read("docs/metrics.md");
    let documented: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            name.starts_with("nanofaas_")
                .then(|| (name.to_string(), cells.get(2).unwrap_or(&"").to_string()))
        })
        .collect();
    // What a control plane with one function emits (the families are the same for every
    // function; a test of the control plane checks that each one moves).
    let metrics = Metrics::default();
    metrics.function("f");
    let emitted: BTreeMap<String, String> = metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect();
    assert_eq!(
        emitted.len(),
        FUNCTION_FAMILIES.len() + GLOBAL_FAMILIES.len()
    );
    let missing: Vec<_> = emitted
        .iter()
        .filter(|(n, k)| documented.get(*n) != Some(k))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md lacks (or misstates the type of) {missing:?}"
    );
    let stale: Vec<&String> = documented
        .keys()
        .filter(|n| !emitted.contains_key(*n))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/metrics.md documents {stale:?}, which /metrics does not emit"
    );
    // Each row's meaning is the family's HELP text.
    let meanings: BTreeMap<&str, &str> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name, *cells.get(4)?))
        })
        .collect();
    let text = metrics.render();
    for (name, help) in text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_once(' '))
    {
        assert_eq!(
            meanings.get(name),
            Some(&help),
            "docs/metrics.md's row of {name}"
        );
    }
}

#[test]
fn every_exit_code_is_in_the_cli_reference() {
    let doc = read("docs/cli.md");
    let section = &doc[doc.find("## Exit codes").expect("an exit code section")..];
    let documented: Vec<u8> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .collect();
    let mut expected: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
    expected.insert(0, 0);
    assert_eq!(documented, expected, "docs/cli.md's exit code table");
}

#[test]
fn relative_links_resolve() {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let mut broken = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if !f.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", f.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}
