//! Inputs: a small deterministic PRNG, byte-level mutations with a dictionary, and a
//! structure-aware JSON generator.

/// xorshift64*: deterministic for a seed, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Applies 1 to 8 random mutations to `input`, keeping it at most `max_len` bytes.
pub fn mutate(
    rng: &mut Rng,
    input: &mut Vec<u8>,
    dict: &[&[u8]],
    corpus: &[Vec<u8>],
    max_len: usize,
) {
    let n = 1 << rng.below(4);
    for _ in 0..n {
        mutate_once(rng, input, dict, corpus);
    }
    input.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, v: &mut Vec<u8>, dict: &[&[u8]], corpus: &[Vec<u8>]) {
    let len = v.len();
    let pos = |rng: &mut Rng| rng.below(len + 1);
    match rng.below(13) {
        0 if len > 0 => {
            let i = rng.below(len);
            v[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            v[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = pos(rng);
            v.insert(i, *rng.pick(INTERESTING_BYTES));
        }
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(16.min(len - a))).min(len);
            v.drain(a..b);
        }
        4 if len > 0 => {
            // Copy a chunk elsewhere.
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64.min(len - a))).min(len);
            let chunk = v[a..b].to_vec();
            let i = rng.below(v.len() + 1);
            v.splice(i..i, chunk);
        }
        5 | 6 if !dict.is_empty() => {
            let i = pos(rng);
            v.splice(i..i, rng.pick(dict).iter().copied());
        }
        7 if !dict.is_empty() && len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(8.min(len - a))).min(len);
            v.splice(a..b, rng.pick(dict).iter().copied());
        }
        8 if !corpus.is_empty() => {
            // Splice: a prefix of this one, a suffix of another.
            let other = rng.pick(corpus);
            let cut = pos(rng);
            let from = rng.below(other.len() + 1);
            v.truncate(cut);
            v.extend_from_slice(&other[from..]);
        }
        9 if !dict.is_empty() => {
            // A token many times: deep nesting, long runs.
            let tok = rng.pick(dict).to_vec();
            let most = if rng.chance(4) { 300 } else { 40 };
            let times = 1 + rng.below(most);
            let i = pos(rng);
            let run: Vec<u8> = tok
                .iter()
                .copied()
                .cycle()
                .take(tok.len() * times)
                .collect();
            v.splice(i..i, run);
        }
        10 if len > 0 => {
            let cut = rng.below(len);
            v.truncate(cut);
        }
        11 if len > 0 => {
            // Change a digit, or grow a number.
            let digits: Vec<usize> = (0..len).filter(|&i| v[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let i = *rng.pick(&digits);
                if rng.chance(2) {
                    v[i] = b'0' + rng.below(10) as u8;
                } else {
                    let more = 1 + rng.below(400);
                    v.splice(i..i, vec![b'9'; more]);
                }
            }
        }
        _ => {
            let i = pos(rng);
            v.insert(i, rng.next_u64() as u8);
        }
    }
}

const INTERESTING_BYTES: &[u8] = &[
    0, b'\n', b'\r', b'\t', b' ', b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b'-', b'.',
    b'e', b'0', b'1', b'9', 0x7f, 0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff,
];

/// Tokens that JSON parsers care about.
pub const JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"\\",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"1e400",
    b"-1e309",
    b"1e-400",
    b"1.7976931348623157e308",
    b"1.8e308",
    b"9007199254740993",
    b"18446744073709551616",
    b"0.0000001",
    b"1E+2",
    b"01",
    b"1.",
    b".5",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\u00e9",
    b"\\x",
    b"\\u12",
    b"\xef\xbb\xbf",
    b"\xed\xa0\x80",
    b"\xc3\xa9",
    b"\xff",
    b"\"input\":",
    b"\"metadata\":",
    b"\"input\"",
    b"\"metadata\"",
    b"{\"k\":\"v\"}",
    b"[[[[[[[[",
    b"]]]]]]]]",
    b"{\"a\":",
    b" ",
    b"\n",
    b"\t",
    b"\x0c",
    b"}}",
];

/// Writes a random JSON value (valid unless `sloppy`) of at most `depth` levels.
pub fn json_value(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    let ws = |rng: &mut Rng, out: &mut Vec<u8>| {
        if rng.chance(4) {
            out.extend_from_slice(rng.pick(&[" ", "\n", "\t", "\r\n  "]).as_bytes());
        }
    };
    let kind = if depth == 0 {
        rng.below(4)
    } else {
        rng.below(6)
    };
    match kind {
        0 => out.extend_from_slice(rng.pick(&["null", "true", "false"]).as_bytes()),
        1 => number(rng, out),
        2 | 3 => string(rng, out),
        4 => {
            out.push(b'[');
            let n = rng.below(5);
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                ws(rng, out);
                json_value(rng, depth - 1, out);
                ws(rng, out);
            }
            out.push(b']');
        }
        _ => {
            out.push(b'{');
            let n = rng.below(5);
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                ws(rng, out);
                string(rng, out);
                out.push(b':');
                ws(rng, out);
                json_value(rng, depth - 1, out);
            }
            out.push(b'}');
        }
    }
}

fn number(rng: &mut Rng, out: &mut Vec<u8>) {
    const EDGE: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "0.5",
        "1e308",
        "1.7976931348623157e308",
        "1e-400",
        "123e-2",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "1E2",
        "1e+2",
        "2.5E-3",
    ];
    if rng.chance(2) {
        out.extend_from_slice(rng.pick(EDGE).as_bytes());
    } else {
        let v = rng.next_u64() as i64 >> rng.below(63);
        out.extend_from_slice(v.to_string().as_bytes());
        if rng.chance(3) {
            out.extend_from_slice(format!(".{}", rng.below(1000)).as_bytes());
        }
        if rng.chance(4) {
            out.extend_from_slice(format!("e{}", rng.below(330) as i64 - 100).as_bytes());
        }
    }
}

fn string(rng: &mut Rng, out: &mut Vec<u8>) {
    const PARTS: &[&str] = &[
        "a",
        "input",
        "metadata",
        "name",
        "k",
        "é",
        "✓",
        "😀",
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\u00e9",
        "\\ud83d\\ude00",
        "\\u0000",
        " ",
        "x.y",
        "[0]",
    ];
    out.push(b'"');
    for _ in 0..rng.below(4) {
        out.extend_from_slice(rng.pick(PARTS).as_bytes());
    }
    out.push(b'"');
}
