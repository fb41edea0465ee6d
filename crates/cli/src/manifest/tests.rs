use super::expand::expand;
use super::problem::{parse_field_path, Seg};
use super::sections::normalize;
use super::*;
use nanofaas_api::ExecutionMode;
use std::collections::HashMap;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn parse_text(text: &str, env: &[(&str, &str)]) -> Result<Manifest, ManifestError> {
    parse(
        text,
        Path::new("/srv/app/manifest.yaml"),
        Path::new("/srv/app"),
        &env_of(env),
    )
}

fn problem(text: &str, env: &[(&str, &str)]) -> Problem {
    match parse_text(text, env) {
        Err(ManifestError::Invalid(p)) => p,
        other => panic!("expected a problem, got {other:?}"),
    }
}

const GOOD: &str = "\
setup:
  - name: prepare
    run: ./prepare.sh ${HOME}
  - run: echo $$PATH and $HOME
functions:
  - name: hello
    command: ${MANIFEST_DIR}/../venv/bin/python -m nanofaas_runtime
    workingDir: hello
    env:
      HANDLER_MODULE: handler
      WORKERS: 2
      DEBUG: true
    timeoutMs: 5000
  - name: pooled
    executionMode: POOL
    endpointUrl: http://127.0.0.1:${POOL_PORT:-9000}/invoke
  - name: here
    command: [./run.sh, 'a b']
example:
  function: hello
  input: { name: world }
";

#[test]
fn loads_expands_and_resolves() {
    let m = parse_text(GOOD, &[("HOME", "/root")]).unwrap();
    assert_eq!(m.dir, Path::new("/srv/app"));
    assert_eq!(
        m.setup,
        [
            SetupStep {
                name: "prepare".into(),
                run: "./prepare.sh /root".into()
            },
            SetupStep {
                name: "echo $PATH and $HOME".into(),
                run: "echo $PATH and $HOME".into()
            },
        ]
    );
    let hello = &m.functions[0];
    assert_eq!(
        hello.command.as_deref().unwrap(),
        ["/srv/app/../venv/bin/python", "-m", "nanofaas_runtime"]
    );
    assert_eq!(hello.working_dir.as_deref(), Some("/srv/app/hello"));
    assert_eq!(hello.env["WORKERS"], "2");
    assert_eq!(hello.env["DEBUG"], "true");
    assert_eq!(hello.timeout_ms, 5000);
    let pooled = &m.functions[1];
    assert_eq!(pooled.execution_mode, ExecutionMode::Pool);
    assert_eq!(
        pooled.endpoint_url.as_deref(),
        Some("http://127.0.0.1:9000/invoke")
    );
    assert_eq!(pooled.working_dir, None, "no command: no working folder");
    let here = &m.functions[2];
    assert_eq!(here.command.as_deref().unwrap(), ["./run.sh", "a b"]);
    assert_eq!(
        here.working_dir.as_deref(),
        Some("/srv/app"),
        "default: the manifest's folder"
    );
    assert_eq!(
        m.example,
        Some(Example {
            function: "hello".into(),
            input: serde_json::json!({"name": "world"})
        })
    );
    // A set variable wins over the default.
    let m = parse_text(GOOD, &[("HOME", "/root"), ("POOL_PORT", "7")]).unwrap();
    assert_eq!(
        m.functions[1].endpoint_url.as_deref(),
        Some("http://127.0.0.1:7/invoke")
    );
}

#[test]
fn expansion_rules() {
    let env = env_of(&[("A", "1"), ("EMPTY", "")]);
    let x = |s: &str| expand(s, &env);
    assert_eq!(x("${A}-${A}").unwrap(), "1-1");
    assert_eq!(x("${B:-two}").unwrap(), "two");
    assert_eq!(x("${EMPTY:-fallback}").unwrap(), "fallback");
    assert_eq!(x("${EMPTY}").unwrap(), "");
    assert_eq!(x("${B:-}").unwrap(), "");
    assert_eq!(x("$$A costs $5 $").unwrap(), "$A costs $5 $");
    assert_eq!(x("$${A}").unwrap(), "${A}");
    assert!(x("${B}").unwrap_err().contains("B is not set"));
    assert!(x("${A").unwrap_err().contains("unclosed"));
    assert!(x("${1A}").unwrap_err().contains("not a variable reference"));
    assert!(x("${}").is_err());
}

#[test]
fn unset_variable_names_function_field_and_line() {
    let p = problem(GOOD, &[]);
    // The first use of an unset variable is in setup[0].run (HOME).
    assert_eq!(p.field.as_deref(), Some("setup[0].run"));
    assert_eq!(p.line, Some(3));
    assert!(p.reason.contains("HOME is not set"), "{p}");
    let text = "functions:\n  - name: f\n    command: x\n    env:\n      TOKEN: ${SECRET_TOKEN}\n";
    let p = problem(text, &[]);
    assert_eq!(p.function.as_deref(), Some("f"));
    assert_eq!(p.field.as_deref(), Some("env.TOKEN"));
    assert_eq!(p.line, Some(5));
    assert_eq!(
            p.to_string(),
            "/srv/app/manifest.yaml:5: function \"f\", field \"env.TOKEN\": environment variable SECRET_TOKEN is not set (set it, or write `${SECRET_TOKEN:-default}`)"
        );
}

#[test]
fn bad_values_name_function_field_and_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
            (
                "functions:\n  - name: f\n    command: x\n    timeoutMs: 0\n",
                "timeoutMs",
                4,
                "between 1 and",
            ),
            (
                "functions:\n  - name: f\n    command: x\n\n    timeoutMs: soon\n",
                "timeoutMs",
                5,
                "invalid type",
            ),
            (
                "functions:\n  - name: f\n    command: x\n    resources:\n      memory: lots\n",
                "resources.memory",
                5,
                "not a memory quantity",
            ),
            (
                "functions:\n  - name: f\n    command: x\n    executionMode: LAMBDA\n",
                "executionMode",
                4,
                "unknown variant",
            ),
            (
                "functions:\n  - name: f\n    command: \"'unclosed\"\n",
                "command",
                3,
                "unclosed",
            ),
            (
                "functions:\n  - name: ok\n    command: x\n  - name: f\n    command: x\n    env: {PORT: }\n",
                "env.PORT",
                6,
                "invalid type: null",
            ),
        ];
    for (text, field, line, reason) in cases {
        let p = problem(text, &[]);
        assert_eq!(p.function.as_deref(), Some("f"), "{text}");
        assert_eq!(p.field.as_deref(), Some(*field), "{text}: {p}");
        assert_eq!(p.line, Some(*line), "{text}: {p}");
        assert!(p.reason.contains(reason), "{text}: {p}");
        assert!(!p.reason.contains(" at line "), "{p}");
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let p = problem(
        "functions:\n  - name: f\n    command: x\n    timeout: 5\n",
        &[],
    );
    assert_eq!(
        (p.function.as_deref(), p.field.as_deref(), p.line),
        (Some("f"), Some("timeout"), Some(4))
    );
    assert!(p.reason.contains("unknown field `timeout`"), "{p}");
    let p = problem("functions: []\nfunctons: []\n", &[]);
    assert_eq!((p.field.as_deref(), p.line), (Some("functons"), Some(2)));
    assert!(p.reason.contains("unknown field `functons`"), "{p}");
    let p = problem("setup:\n  - run: x\n    when: always\nfunctions: []\n", &[]);
    assert_eq!(
        (p.field.as_deref(), p.line),
        (Some("setup[0].when"), Some(3))
    );
}

#[test]
fn missing_things_point_at_the_function() {
    let p = problem(
        "functions:\n  - name: a\n    command: x\n  - name: b\n    timeoutMs: 5\n",
        &[],
    );
    assert_eq!(p.function.as_deref(), Some("b"));
    assert_eq!(p.field.as_deref(), Some("command"));
    assert_eq!(
        p.line,
        Some(4),
        "the field is absent: the function's own line"
    );
    let p = problem("functions:\n  - command: x\n", &[]);
    assert_eq!(p.function.as_deref(), Some("functions[0]"));
    assert_eq!(p.field.as_deref(), Some("name"));
    let p = problem("setup: []\n", &[]);
    assert!(p.reason.contains("missing `functions:`"), "{p}");
    let p = problem("", &[]);
    assert!(p.reason.contains("empty"), "{p}");
    let p = problem("setup:\n  - name: nothing to run\nfunctions: []\n", &[]);
    assert_eq!(p.field.as_deref(), Some("setup[0].run"));
    assert_eq!(p.line, Some(2));
}

#[test]
fn duplicates_syntax_and_shapes() {
    let p = problem(
        "functions:\n  - name: a\n    command: x\n  - name: a\n    command: y\n",
        &[],
    );
    assert_eq!((p.field.as_deref(), p.line), (Some("name"), Some(4)));
    assert!(p.reason.contains("earlier function"), "{p}");
    let p = problem("functions:\n  - name: a\n   command: x\n", &[]);
    assert_eq!(p.line, Some(3), "{p}");
    assert_eq!(p.field, None);
    assert!(!p.reason.contains("line 3"), "{p}");
    let p = problem(
        "functions:\n  - name: a\n    env: { A: ${X:-1}, B: c }\n",
        &[],
    );
    assert_eq!(p.line, Some(3), "{p}");
    assert!(p.reason.contains("quote values"), "{p}");
    assert!(p.reason.contains("while parsing"), "{p}");
    let p = problem("functions: {name: a}\n", &[]);
    assert!(p.reason.contains("must be a list"), "{p}");
    let p = problem("- a\n", &[]);
    assert!(p.reason.contains("must be a mapping"), "{p}");
    let p = problem(
        "functions:\n  - name: a\n    command: x\nexample: {function: b}\n",
        &[],
    );
    assert_eq!(p.field.as_deref(), Some("example.function"));
    assert_eq!(p.line, Some(4));
    let p = problem("functions:\n  - !Spec {name: a}\n", &[]);
    assert!(p.reason.contains("must be a mapping"), "{p}");
    let p = problem("functions:\n  - name: a\n    command: !cmd x\n", &[]);
    assert!(p.reason.contains("tags (!cmd)"), "{p}");
    assert_eq!((p.field.as_deref(), p.line), (Some("command"), Some(3)));
}

#[test]
fn merge_keys_share_defaults() {
    let text = "\
defaults: &d
  timeoutMs: 1234
functions:
  - <<: *d
    name: a
    command: x
";
    // `defaults` is not a known top-level key; `x-defaults` is an extension field.
    assert!(parse_text(text, &[]).is_err());
    let m = parse_text(&text.replace("defaults:", "x-defaults:"), &[]).unwrap();
    assert_eq!(m.functions[0].timeout_ms, 1234);
    let text = "\
functions:
  - &a
    name: a
    command: x
    timeoutMs: 1234
  - <<: *a
    name: b
";
    let m = parse_text(text, &[]).unwrap();
    assert_eq!(m.functions[1].name, "b");
    assert_eq!(m.functions[1].timeout_ms, 1234);
}

#[test]
fn field_paths() {
    assert_eq!(
        parse_field_path("resources.memory"),
        [Seg::key("resources"), Seg::key("memory")]
    );
    assert_eq!(
        parse_field_path("command[2]"),
        [Seg::key("command"), Seg::Index(2)]
    );
    assert_eq!(parse_field_path(""), []);
    assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
}

#[test]
fn load_resolves_against_the_real_folder() {
    let dir = std::env::temp_dir().join(format!("nanofaas-manifest-{}", std::process::id()));
    let sub = dir.join("nested");
    std::fs::create_dir_all(&sub).unwrap();
    let file = sub.join("m.yaml");
    std::fs::write(
        &file,
        "functions:\n  - name: f\n    command: ${MANIFEST_DIR}/run\n    workingDir: ../work\n",
    )
    .unwrap();
    let m = load(&file).unwrap();
    let real = std::fs::canonicalize(&sub).unwrap();
    assert_eq!(m.dir, real);
    assert!(m.path.is_absolute());
    let f = &m.functions[0];
    assert_eq!(
        f.command.as_deref().unwrap()[0],
        format!("{}/run", real.display())
    );
    assert_eq!(
        f.working_dir.as_deref(),
        Some(real.parent().unwrap().join("work").to_str().unwrap())
    );
    let missing = load(&dir.join("nope.yaml")).unwrap_err();
    assert!(matches!(missing, ManifestError::Read { .. }));
    assert!(missing.to_string().contains("nope.yaml"), "{missing}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn yaml_1_2_scalars_as_before() {
    // serde_yaml read YAML 1.2 scalars; the manifests written for it must mean the same.
    let m = parse_text(
        "functions:\n  - name: f\n    command: x\n    env: {A: yes, B: 0755, C: 1_000, D: 1.5, E: 1e3, F: -3, G: 0x1F, H: on}\n",
        &[],
    )
    .unwrap();
    let env = &m.functions[0].env;
    let got: Vec<&str> = ["A", "B", "C", "D", "E", "F", "G", "H"]
        .iter()
        .map(|k| env[*k].as_str())
        .collect();
    assert_eq!(
        got,
        ["yes", "0755", "1_000", "1.5", "1000.0", "-3", "31", "on"]
    );
    let p = problem(
        "functions:\n  - name: f\n    command: x\n    timeoutMs: .inf\n",
        &[],
    );
    assert_eq!((p.field.as_deref(), p.line), (Some("timeoutMs"), Some(4)));
    assert!(p.reason.contains(".inf is not a finite number"), "{p}");
}

#[test]
fn duplicate_keys_are_refused_with_their_line() {
    let p = problem(
        "functions:\n  - name: f\n    command: x\n    command: y\n",
        &[],
    );
    assert_eq!(p.line, Some(4), "{p}");
    assert!(p.reason.contains("duplicate key `command`"), "{p}");
    assert!(!p.reason.contains("line 4"), "{p}");
    let p = problem("functions: []\nfunctions: []\n", &[]);
    assert_eq!(p.line, Some(2), "{p}");
    assert!(p.reason.contains("duplicate"), "{p}");
}

#[test]
fn more_than_one_document_is_refused() {
    let p = problem(
        "functions: []\n---\nfunctions:\n  - name: f\n    command: x\n",
        &[],
    );
    assert!(p.reason.contains("one YAML document"), "{p}");
    assert!(p.line.is_some(), "{p}");
    // A single document with its markers is fine.
    assert!(parse_text("---\nfunctions: []\n...\n", &[]).is_ok());
}

#[test]
fn deep_nesting_is_refused_quickly() {
    let started = std::time::Instant::now();
    for text in [
        format!(
            "functions: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!(
            "functions: {}{}\n",
            "{a: ".repeat(10_000),
            "}".repeat(10_000)
        ),
        (0..200)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect::<String>(),
        (0..200)
            .map(|i| format!("{}-\n", "  ".repeat(i)))
            .collect::<String>(),
    ] {
        let p = problem(&text, &[]);
        assert!(
            p.reason.contains("nested more than 32 deep"),
            "{}: {p}",
            &text[..40]
        );
        assert!(p.line.is_some(), "{p}");
    }
    // Up to the limit is fine, in flow and block style alike, within a test thread's stack
    // (2 MiB) in a debug build: the parser recurses once per level.
    let depth = yaml::MAX_DEPTH - 4;
    let text = format!(
        "functions:\n  - name: f\n    command: x\n    env: {{A: \"1\"}}\nexample:\n  function: f\n  input: {}1{}\n",
        "{a: ".repeat(depth),
        "}".repeat(depth)
    );
    let m = parse_text(&text, &[]).unwrap();
    assert!(m.example.unwrap().input.is_object());
    let block: String = (0..depth)
        .map(|i| format!("{}a:\n", "  ".repeat(i + 1)))
        .collect();
    let text = format!(
        "functions: []\nx-deep:\n{block}{}1\n",
        "  ".repeat(depth + 1)
    );
    parse_text(&text, &[]).unwrap();
    // A generous bound: the point is no hang and no stack overflow, not speed.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn alias_bombs_are_refused() {
    // "Billion laughs": nine levels of nine aliases each would expand to 9^9 strings.
    let mut text = String::from("x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let mut prev = 'a';
    for name in 'b'..='i' {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        text.push_str(&format!("x-{name}: &{name} [{refs}]\n"));
        prev = name;
    }
    text.push_str("functions:\n  - name: f\n    command: x\n    env: {A: \"1\"}\n");
    let started = std::time::Instant::now();
    let p = problem(&text, &[]);
    assert!(p.reason.contains("aliases"), "{p}");
    assert!(p.line.is_some(), "{p}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // The same pattern used in the command itself.
    let text = text.replace("    command: x\n", "    command: [*i]\n");
    let p = problem(&text, &[]);
    assert!(p.reason.contains("aliases"), "{p}");
    // Ordinary sharing through anchors stays allowed.
    assert!(parse_text(
        "x-env: &e {A: \"1\"}\nfunctions:\n  - {name: f, command: x, env: *e}\n  - {name: g, command: x, env: *e}\n",
        &[],
    )
    .is_ok());
}

#[test]
fn huge_input_is_refused_before_parsing() {
    let text = format!(
        "functions:\n  - name: f\n    command: {}\n",
        "x".repeat(yaml::MAX_BYTES)
    );
    let p = problem(&text, &[]);
    assert!(p.reason.contains("larger than"), "{p}");
    // Just under the limit is read (and the big scalar is then simply a long command).
    let text = format!(
        "functions:\n  - name: f\n    command: {}\n",
        "x".repeat(yaml::MAX_BYTES - 100)
    );
    let m = parse_text(&text, &[]).unwrap();
    assert_eq!(
        m.functions[0].command.as_ref().unwrap()[0].len(),
        yaml::MAX_BYTES - 100
    );
    // A file over the limit is read no further than the limit.
    let dir = std::env::temp_dir().join(format!("nanofaas-manifest-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.yaml");
    std::fs::write(
        &file,
        format!("x-pad: {}\n", "y".repeat(2 * yaml::MAX_BYTES)),
    )
    .unwrap();
    let e = load(&file).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_manifest_of_the_repository_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    for sub in ["examples", "docs", "bench", "crates/e2e"] {
        collect_yaml(&root.join(sub), &mut found, 0);
    }
    let mut manifests = 0;
    for path in &found {
        let text = std::fs::read_to_string(path).unwrap();
        if !text.lines().any(|l| l.starts_with("functions:")) {
            continue;
        }
        manifests += 1;
        let env = |name: &str| Some(format!("/env/{name}"));
        if let Err(e) = parse(&text, path, Path::new("/srv/app"), &env) {
            panic!("{}: {e}", path.display());
        }
    }
    // The manifest of the CLI reference, as the reader copies it.
    let doc = std::fs::read_to_string(root.join("docs/cli.md")).unwrap();
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.lines().any(|l| l.starts_with("functions:")))
        .expect("docs/cli.md shows a manifest");
    let env = |_: &str| None;
    let m = parse(block, Path::new("docs/cli.md"), Path::new("/srv/app"), &env).unwrap();
    assert_eq!(m.functions[0].name, "hello-python");
    manifests += 1;
    assert!(manifests >= 2, "no manifest found under {}", root.display());
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && depth < 6 && !p.ends_with("target") && !p.ends_with("node_modules") {
            collect_yaml(&p, out, depth + 1);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}
