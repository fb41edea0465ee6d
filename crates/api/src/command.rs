//! Splitting a command line into arguments the way a POSIX shell would for plain words, single
//! and double quotes and backslashes, with no expansion of any kind. Used for `WATCHDOG_CMD`,
//! `command` and `runtimeCommand`, so that a runtime starts without needing `/bin/sh`.

/// Splits `line` into argv. Errors on an unclosed quote, a trailing backslash or an empty line.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed single quote in {line:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unclosed double quote in {line:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed double quote in {line:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => {
                    in_word = true;
                    cur.push(c);
                }
                None => return Err(format!("trailing backslash in {line:?}")),
            },
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    if args.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(args)
}

/// Joins arguments into a line that [`split`] turns back into the same arguments.
pub fn join<S: AsRef<str>>(args: &[S]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let a = a.as_ref();
        if i > 0 {
            out.push(' ');
        }
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
        if plain {
            out.push_str(a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{join, split};

    #[test]
    fn join_round_trips() {
        for args in [
            vec!["python3", "-m", "nanofaas_runtime"],
            vec!["sh", "-c", "echo 'hi' \"there\" $HOME"],
            vec!["a b", "", "it's", "back\\slash"],
        ] {
            assert_eq!(split(&join(&args)).unwrap(), args, "{}", join(&args));
        }
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(split("a b  c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split(r#"python3 -c 'print("hi there")'"#).unwrap(),
            ["python3", "-c", r#"print("hi there")"#]
        );
        assert_eq!(
            split(r#"a "b \"c\" d" e\ f ''"#).unwrap(),
            ["a", r#"b "c" d"#, "e f", ""]
        );
        assert!(split("a 'b").is_err());
        assert!(split("a \"b").is_err());
        assert!(split("a\\").is_err());
        assert!(split("   ").is_err());
    }
}
