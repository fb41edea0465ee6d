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

#[cfg(test)]
mod tests {
    use super::split;

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
