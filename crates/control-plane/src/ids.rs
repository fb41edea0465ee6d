//! Identifiers: execution ids and trace ids.
//!
//! Ids are random (UUID v4 layout) from a per-thread xorshift generator seeded once from the OS,
//! so minting one costs a few nanoseconds and no system call. They are unique, not secret: the
//! callback route is protected by per-attempt tokens (see `auth`), not by unguessable ids.

use std::cell::Cell;

thread_local! {
    static RNG: Cell<(u64, u64)> = Cell::new(seed());
}

fn seed() -> (u64, u64) {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to time and thread identity, still unique per process.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tid = std::thread::current().id();
        let h = format!("{t}{tid:?}");
        for (i, byte) in h.bytes().enumerate() {
            b[i % 16] ^= byte;
        }
    }
    let a = u64::from_le_bytes(b[..8].try_into().unwrap()) | 1;
    let c = u64::from_le_bytes(b[8..].try_into().unwrap()) | 1;
    (a, c)
}

fn next_u64() -> u64 {
    RNG.with(|cell| {
        // xorshift128+
        let (mut s1, s0) = cell.get();
        let result = s0.wrapping_add(s1);
        s1 ^= s1 << 23;
        let s1 = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
        cell.set((s0, s1));
        result
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, v: u64, nibbles: usize) {
    for i in (0..nibbles).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize] as char);
    }
}

/// A new execution id, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
pub fn execution_id() -> String {
    let hi = next_u64();
    let lo = next_u64();
    let mut s = String::with_capacity(36);
    push_hex(&mut s, hi >> 32, 8);
    s.push('-');
    push_hex(&mut s, (hi >> 16) & 0xffff, 4);
    s.push('-');
    push_hex(&mut s, 0x4000 | (hi & 0x0fff), 4);
    s.push('-');
    push_hex(&mut s, 0x8000 | ((lo >> 48) & 0x3fff), 4);
    s.push('-');
    push_hex(&mut s, lo & 0xffff_ffff_ffff, 12);
    s
}

/// A random 64-bit number (not secret), e.g. for span ids.
pub fn random_u64() -> u64 {
    next_u64()
}

/// A new trace id: 32 hex digits.
pub fn trace_id() -> String {
    let mut s = String::with_capacity(32);
    push_hex(&mut s, next_u64(), 16);
    push_hex(&mut s, next_u64(), 16);
    s
}

/// Random bytes for secrets; errors if the OS has no randomness to give.
pub fn secret_bytes() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| format!("no OS randomness for the callback secret: {e}"))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_well_formed_and_unique() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = execution_id();
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
            assert!(seen.insert(id));
        }
        assert_eq!(trace_id().len(), 32);
    }
}
