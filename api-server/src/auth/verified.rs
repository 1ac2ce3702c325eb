//! JWTs already verified, so that a client sending the same token on every
//! call pays for one signature check, not one per request.
//!
//! An entry holds the principal the token proved, the token's `exp` and
//! the key that verified it. It is used only while the token has not
//! expired (strictly: the leeway applies to full verifications only) and
//! only while the identity provider still publishes that very key — the
//! caller checks that against the key cache, which refetches on its usual
//! schedule, so a withdrawn key stops working exactly as soon as without
//! this cache. Tokens are kept by their SHA-256 digest, never as text.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::jwk::Jwk;
use sha2::{Digest, Sha256};

use super::Principal;

/// Most tokens remembered; a full map first drops the expired entries and,
/// should that free nothing, everything (only valid tokens get in, so
/// filling it takes that many valid tokens, and the cost of a clear is one
/// signature check per caller).
const CAPACITY: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Principal,
    /// The token's `exp` (seconds since the epoch).
    pub expires_at: u64,
    /// The key that verified it.
    pub key: Jwk,
}

#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Verified>>,
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl VerifiedTokens {
    /// The entry for `token` if it has not expired at `now` (seconds).
    pub fn get(&self, digest: &[u8; 32], now: u64) -> Option<Verified> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(digest).filter(|v| now < v.expires_at).cloned()
    }

    pub fn insert(&self, digest: [u8; 32], verified: Verified, now: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, v| now < v.expires_at);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest, verified);
    }

    pub fn forget(&self, digest: &[u8; 32]) {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(digest);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(expires_at: u64) -> Verified {
        let key: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "k1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }))
        .unwrap();
        Verified {
            principal: Principal { user: "alice".into(), groups: vec![], api_key: None, platform_admin: false },
            expires_at,
            key,
        }
    }

    #[test]
    fn an_entry_serves_until_its_token_expires() {
        let tokens = VerifiedTokens::default();
        let d = digest("a.b.c");
        tokens.insert(d, entry(100), 10);
        assert!(tokens.get(&d, 99).is_some());
        assert!(tokens.get(&d, 100).is_none(), "used at exp");
        assert!(tokens.get(&digest("a.b.d"), 10).is_none());
        tokens.forget(&d);
        assert!(tokens.get(&d, 10).is_none());
    }

    #[test]
    fn a_full_map_drops_the_expired_first_then_everything() {
        let tokens = VerifiedTokens::default();
        for i in 0..CAPACITY {
            tokens.insert(digest(&i.to_string()), entry(if i % 2 == 0 { 50 } else { 200 }), 10);
        }
        tokens.insert(digest("new"), entry(200), 60);
        assert_eq!(tokens.len(), CAPACITY / 2 + 1, "only the expired were dropped");
        assert!(tokens.get(&digest("1"), 60).is_some());
        for i in 0..CAPACITY {
            tokens.insert(digest(&format!("more{i}")), entry(200), 60);
        }
        assert!(tokens.len() <= CAPACITY);
    }
}
