use super::*;

fn inv(b: &[u8]) -> Result<Body, JsonError> {
    check_invocation(b)
}

fn inv_err(b: &[u8]) -> JsonError {
    match check_invocation(b) {
        Err(e) => e,
        Ok(k) => panic!("{:?} was accepted as {k:?}", String::from_utf8_lossy(b)),
    }
}

fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

#[test]
fn accepts_invocations() {
    assert_eq!(inv(b"").unwrap(), Body::Empty);
    assert_eq!(inv(b" \r\n\t").unwrap(), Body::Empty);
    for ok in [
        &b"{}"[..],
        b" { } ",
        b"{\"input\":null}",
        b"{\"input\":{\"a\":[1,2.5,-0,1e10,1E-400,true,false,null,\"s\\u00e9\\ud83d\\ude00\\n\"]}}",
        b"{\"metadata\":{\"k\":\"v\",\"l\":\"\"},\"input\":7}",
        b"{\"metadata\":null}",
        b"{\"metadata\":{}}",
        b"{\"input\":{\"a\":1,\"a\":2}}",
        b"{\"\\u0069nput\":1}",
        "{\"input\":\"héllo ✓\"}".as_bytes(),
    ] {
        assert_eq!(
            inv(ok),
            Ok(Body::Request),
            "{}",
            String::from_utf8_lossy(ok)
        );
    }
    let body = format!("{{\"input\":{}}}", deep(MAX_DEPTH - 1));
    assert_eq!(inv(body.as_bytes()), Ok(Body::Request));
}

#[test]
fn names_each_problem_and_its_place() {
    let e = inv_err(b"{\"input\":1}}");
    assert_eq!(e.problem, Problem::TrailingCharacters);
    assert_eq!(
        (e.path.as_str(), e.offset, e.line, e.column),
        ("", 11, 1, 12)
    );
    assert_eq!(
        e.message(),
        "trailing characters after the JSON value at line 1, column 12"
    );

    let e = inv_err(b"{\"input\":\"a\xff\"}");
    assert_eq!((e.problem, e.offset), (Problem::InvalidUtf8, 11));

    let body = format!("{{\"input\":{}}}", deep(MAX_DEPTH));
    let e = inv_err(body.as_bytes());
    assert_eq!(e.problem, Problem::TooDeep(MAX_DEPTH));
    assert!(e.path.starts_with("input[0][0]"), "{}", e.path);

    let e = inv_err(b"{\"input\":{\"n\":[1,1e400]}}");
    assert_eq!(e.problem, Problem::NumberOutOfRange);
    assert_eq!(e.path, "input.n[1]");
    assert_eq!(
        inv_err(b"{\"input\":-1e309}").problem,
        Problem::NumberOutOfRange
    );
    let big = format!("{{\"input\":1{}}}", "0".repeat(400));
    assert_eq!(inv_err(big.as_bytes()).problem, Problem::NumberOutOfRange);
    assert_eq!(
        inv_err(b"{\"input\":1e99999999999999999999999}").problem,
        Problem::NumberOutOfRange
    );
    // Small enough, or tiny: fine.
    assert!(inv(b"{\"input\":[1.7976931348623157e308,1e-99999,0e99999]}").is_ok());

    let e = inv_err(b"{\"input\":1,\"input\":2}");
    assert_eq!(
        (e.problem, e.path.as_str()),
        (Problem::DuplicateKey("input".into()), "input")
    );
    let e = inv_err(b"{\"metadata\":{\"k\":\"1\",\"\\u006b\":\"2\"}}");
    assert_eq!(e.problem, Problem::DuplicateKey("k".into()));
    assert_eq!(e.path, "metadata.k");

    let e = inv_err(b"{\"metadata\":{\"k\":1}}");
    assert_eq!(e.path, "metadata.k");
    assert_eq!(e.problem, Problem::Expected("a string"));
    let e = inv_err(b"{\"inptu\":1}");
    assert_eq!(
        (e.path.as_str(), e.problem),
        ("inptu", Problem::UnknownField("inptu".into()))
    );
    let e = inv_err(b"{\"input\":");
    assert_eq!(
        (e.path.as_str(), e.problem),
        ("input", Problem::Eof("a value"))
    );
    assert_eq!(inv_err(b"[1]").problem, Problem::NotAnObject);
    assert_eq!(inv_err(b"\"x\"").problem, Problem::NotAnObject);
    assert_eq!(inv_err(b"\xef\xbb\xbf{}").problem, Problem::NotAnObject);

    let e = inv_err(b"{\"input\":\"\\ud800\"}");
    assert_eq!((e.problem, e.offset), (Problem::LoneSurrogate, 10));
    assert_eq!(
        inv_err(b"{\"input\":\"\\udc00\"}").problem,
        Problem::LoneSurrogate
    );
    assert_eq!(
        inv_err(b"{\"input\":\"\\ud800\\u0041\"}").problem,
        Problem::LoneSurrogate
    );
    assert_eq!(
        inv_err(b"{\"input\":\"\\x\"}").problem,
        Problem::InvalidEscape
    );
    assert_eq!(
        inv_err(b"{\"input\":\"\\u12\"}").problem,
        Problem::InvalidEscape
    );
    assert_eq!(
        inv_err(b"{\"input\":\"a\tb\"}").problem,
        Problem::ControlCharacter
    );
    assert_eq!(
        inv_err(b"{\"input\":01}").problem,
        Problem::InvalidNumber("leading zeros are not allowed")
    );
    assert_eq!(
        inv_err(b"{\"input\":1.}").problem,
        Problem::InvalidNumber("expected a digit")
    );
    assert_eq!(
        inv_err(b"{\"input\":-}").problem,
        Problem::InvalidNumber("expected a digit")
    );
    assert_eq!(
        inv_err(b"{\"input\":1e}").problem,
        Problem::InvalidNumber("expected a digit")
    );
    assert_eq!(
        inv_err(b"{\"input\":[1,]}").problem,
        Problem::Expected("a JSON value")
    );
    assert_eq!(
        inv_err(b"{\"input\":1,}").problem,
        Problem::Expected("a key in double quotes")
    );
    assert_eq!(
        inv_err(b"{\"input\":tru}").problem,
        Problem::Expected("a JSON value")
    );
    assert_eq!(
        inv_err(b"{\"input\":tru").problem,
        Problem::Eof("a literal")
    );
    assert_eq!(
        inv_err(b"{\"input\" 1}").problem,
        Problem::Expected("':' after the key")
    );
    assert_eq!(
        inv_err(b"{\"input\":\"abc").problem,
        Problem::Eof("a string")
    );
    assert_eq!(
        inv_err(b"{\"input\":[1 2]}").problem,
        Problem::Expected("',' or ']'")
    );
    assert_eq!(
        inv_err(b"{\"input\":1 2}").problem,
        Problem::Expected("',' or '}'")
    );
    // \f is not JSON whitespace.
    assert_eq!(inv_err(b"\x0c").problem, Problem::NotAnObject);

    let e = inv_err(b"{\n  \"input\": {\n    \"\xc3\xa9\": 1e400}}");
    assert_eq!((e.line, e.column), (3, 10));
    assert_eq!(e.path, "input.\u{e9}");
}

#[test]
fn strict_rules_refuse_duplicate_keys_everywhere() {
    assert!(check(br#"{"a":{"b":1,"b":2}}"#, Rules::DATA).is_ok());
    let e = check(br#"{"a":{"b":1,"b":2}}"#, Rules::STRICT).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.problem),
        ("a.b", Problem::DuplicateKey("b".into()))
    );
    // Many keys switch to a hash set; the duplicate is still found.
    let mut many: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
    many.push("\"k7\":0".into());
    let body = format!("{{{}}}", many.join(","));
    assert_eq!(
        check(body.as_bytes(), Rules::STRICT).unwrap_err().problem,
        Problem::DuplicateKey("k7".into())
    );
    many.pop();
    let body = format!("{{{}}}", many.join(","));
    assert!(check(body.as_bytes(), Rules::STRICT).is_ok());
    assert_eq!(
        check(b"", Rules::STRICT).unwrap_err().problem,
        Problem::Eof("a value")
    );
    assert_eq!(
        check(b"1 2", Rules::STRICT).unwrap_err().problem,
        Problem::TrailingCharacters
    );
    assert!(check(b" 1 ", Rules::STRICT).is_ok());
    assert!(check(deep(MAX_DEPTH).as_bytes(), Rules::STRICT).is_ok());
    assert_eq!(
        check(deep(MAX_DEPTH + 1).as_bytes(), Rules::STRICT)
            .unwrap_err()
            .problem,
        Problem::TooDeep(MAX_DEPTH)
    );
    // Very deep input does not overflow the stack: it stops at the limit.
    let d = "[".repeat(1_000_000);
    assert_eq!(
        check(d.as_bytes(), Rules::DATA).unwrap_err().problem,
        Problem::TooDeep(MAX_DEPTH)
    );
}

#[test]
fn agrees_with_serde_json_on_what_it_accepts() {
    for b in [
        &b"{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\"}"[..],
        b"[1e308,-1e308,1.5e-400]",
        b"1e309",
        b"\"\\ud83d\\ude00\"",
        b"\"\\ud83d\"",
        b"{\"a\":1}}",
        b"[01]",
        b"123456789012345678901234567890",
    ] {
        let ours = check(b, Rules::DATA).is_ok();
        let serde = serde_json::from_slice::<serde_json::Value>(b).is_ok();
        assert_eq!(ours, serde, "{}", String::from_utf8_lossy(b));
    }
}

#[test]
fn unescapes_keys() {
    assert_eq!(
        unescape(r#"a\"b\\\/\n\u00e9\ud83d\ude00"#),
        "a\"b\\/\n\u{e9}\u{1F600}"
    );
}

#[test]
fn the_word_at_a_time_scan_matches_a_byte_loop() {
    let naive = |b: &[u8], mut i: usize| {
        let mut wide = false;
        while let Some(&c) = b.get(i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            wide |= c >= 0x80;
            i += 1;
        }
        (i, wide)
    };
    let fills: [&[u8]; 4] = [b"a", "é".as_bytes(), b"\x7f", b"\xff"];
    for fill in fills {
        for len in 0..40 {
            for stop in [&b"\""[..], b"\\", b"\x00", b"\x1f", b""] {
                for at in 0..=len {
                    let mut b: Vec<u8> = fill.iter().copied().cycle().take(len).collect();
                    b.splice(at.min(b.len())..at.min(b.len()), stop.iter().copied());
                    for from in 0..3.min(b.len() + 1) {
                        assert_eq!(scan(&b, from), naive(&b, from), "{b:?} from {from}");
                    }
                }
            }
        }
    }
    // UTF-8 is checked run by run, around escapes, and across word boundaries.
    assert!(check("\"abcdefgé\\nhijklmnoé\"".as_bytes(), Rules::DATA).is_ok());
    let e = check(b"\"abcdefg\\n\xe9xyz\"", Rules::DATA).unwrap_err();
    assert_eq!((e.problem, e.offset), (Problem::InvalidUtf8, 10));
    let e = check(b"\"abcdefghijk\xc3\"", Rules::DATA).unwrap_err();
    assert_eq!((e.problem, e.offset), (Problem::InvalidUtf8, 12));
    assert_eq!(
        check(b"\xff", Rules::DATA).unwrap_err().problem,
        Problem::InvalidUtf8
    );
    assert_eq!(
        check(b"[1,\xc3\xa9]", Rules::DATA).unwrap_err().problem,
        Problem::Expected("a JSON value")
    );
    assert_eq!(
        check(b"\"abc\xe2\x9c", Rules::DATA).unwrap_err().problem,
        Problem::InvalidUtf8
    );
    assert_eq!(
        check(b"\"abcdefghij\x01\"", Rules::DATA)
            .unwrap_err()
            .problem,
        Problem::ControlCharacter
    );
}

#[test]
fn duplicate_keys_compare_decoded_text() {
    for dup in [
        &br#"{"a":1,"a":2}"#[..],
        br#"{"a":1,"\u0061":2}"#,
        br#"{"\u0061":1,"a":2}"#,
        br#"{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k\u0035":5}"#,
    ] {
        assert!(
            matches!(
                check(dup, Rules::STRICT).unwrap_err().problem,
                Problem::DuplicateKey(_)
            ),
            "{}",
            String::from_utf8_lossy(dup)
        );
    }
    assert!(check(br#"{"a":1,"b":2,"\u0062b":3}"#, Rules::STRICT).is_ok());
}
