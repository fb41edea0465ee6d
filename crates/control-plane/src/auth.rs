//! Callback tokens: proof that a callback comes from whoever was sent an execution attempt.
//!
//! A token is `{attempt}.{hex(HMAC-SHA256(secret, execution_id ‖ 0 ‖ attempt))[..32]}`. The control
//! plane mints one per dispatched attempt and hands it to the instance with the callback URL
//! (`X-Callback-Token` header or `CALLBACK_TOKEN` env); the callback route recomputes it. Nothing is
//! stored per token, and a token for one execution or attempt is useless for any other.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct CallbackAuth {
    key: [u8; 32],
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Mismatch,
}

impl CallbackAuth {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Derives the key from a configured secret string (any length).
    pub fn from_secret(secret: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(b"nanofaas-callback-key").expect("any key length");
        mac.update(secret.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut key = [0u8; 32];
        key.copy_from_slice(&out);
        Self { key }
    }

    fn mac(&self, execution_id: &str, attempt: u32) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(execution_id.as_bytes());
        mac.update(&[0]);
        mac.update(&attempt.to_be_bytes());
        mac
    }

    pub fn token(&self, execution_id: &str, attempt: u32) -> String {
        let tag = self.mac(execution_id, attempt).finalize().into_bytes();
        let mut s = String::with_capacity(44);
        s.push_str(&attempt.to_string());
        s.push('.');
        for b in &tag[..16] {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap());
            s.push(char::from_digit((b & 0xf) as u32, 16).unwrap());
        }
        s
    }

    /// Returns the attempt the token was minted for.
    pub fn verify(&self, execution_id: &str, token: &str) -> Result<u32, TokenError> {
        let (attempt, hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let attempt: u32 = attempt.parse().map_err(|_| TokenError::Malformed)?;
        if hex.len() != 32 {
            return Err(TokenError::Malformed);
        }
        let mut tag = [0u8; 16];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).map_err(|_| TokenError::Malformed)?;
            tag[i] = u8::from_str_radix(s, 16).map_err(|_| TokenError::Malformed)?;
        }
        self.mac(execution_id, attempt)
            .verify_truncated_left(&tag)
            .map(|_| attempt)
            .map_err(|_| TokenError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_execution_and_attempt() {
        let a = CallbackAuth::new([7; 32]);
        let t = a.token("exec-1", 2);
        assert_eq!(a.verify("exec-1", &t), Ok(2));
        assert_eq!(a.verify("exec-2", &t), Err(TokenError::Mismatch));
        let forged = t.replacen("2.", "3.", 1);
        assert_eq!(a.verify("exec-1", &forged), Err(TokenError::Mismatch));
        assert_eq!(a.verify("exec-1", "nope"), Err(TokenError::Malformed));
        assert_eq!(a.verify("exec-1", "1.zz"), Err(TokenError::Malformed));
        let other = CallbackAuth::from_secret("another");
        assert_eq!(other.verify("exec-1", &t), Err(TokenError::Mismatch));
    }
}
