//! SCRAM-SHA-256 password verifiers, computed on the operator's side.
//!
//! `CREATE ROLE ... PASSWORD '<plain>'` would send the password in the statement text, where the
//! server's statement log (`log_statement = ddl`), `pg_stat_statements` and error messages can
//! keep it. Sending the verifier PostgreSQL itself would store instead (what `psql`'s `\password`
//! and libpq's `PQencryptPasswordConn` do) avoids that, and pins the storage format to SCRAM no
//! matter what the server's `password_encryption` says: PostgreSQL stores a string of the form
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` as-is.
//!
//! The construction is RFC 5802 / RFC 7677: SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt,
//! iterations); StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")); ServerKey =
//! HMAC(SaltedPassword, "Server Key"). HMAC and the single-block PBKDF2 are written out here over
//! `sha2` (a dozen lines) rather than pulling in two more crates.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// PostgreSQL's own default (`scram_iterations`).
const ITERATIONS: u32 = 4096;
/// PostgreSQL's own salt length.
const SALT_BYTES: usize = 16;
const BLOCK_BYTES: usize = 64;

/// A verifier for `password` with a fresh random salt.
///
/// PostgreSQL runs the password through SASLprep first; for ASCII input that is the identity, and
/// [`random_password`](super::random_password) only produces ASCII. Non-ASCII passwords are refused
/// by the caller ([`ensure_tenant_database`](super::ensure_tenant_database)) rather than prepared
/// here, so what we hash is always what the server compares.
pub fn verifier(password: &str) -> String {
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    verifier_with_salt(password.as_bytes(), &salt, ITERATIONS)
}

/// Whether `stored` (a verifier as PostgreSQL keeps it) was made from
/// `password`: recomputed with its own salt and iteration count. Anything
/// that is not a SCRAM-SHA-256 verifier does not match.
pub fn matches(stored: &str, password: &str) -> bool {
    let parse = || {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (iterations_and_salt, _keys) = rest.split_once('$')?;
        let (iterations, salt) = iterations_and_salt.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|i| (1..=10_000_000).contains(i))?;
        Some((iterations, STANDARD.decode(salt).ok()?))
    };
    parse().is_some_and(|(iterations, salt)| verifier_with_salt(password.as_bytes(), &salt, iterations) == stored)
}

fn verifier_with_salt(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let salted = pbkdf2_sha256(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK_BYTES];
    if key.len() > BLOCK_BYTES {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// PBKDF2-HMAC-SHA-256 (RFC 8018) for one 32-byte output block, all SCRAM needs.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &first);
    let mut output = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        output.iter_mut().zip(u).for_each(|(o, b)| *o ^= b);
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn pbkdf2_matches_published_vectors() {
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn verifier_has_postgres_format_and_fresh_salt() {
        let a = verifier("pencil");
        let b = verifier("pencil");
        assert!(a.starts_with("SCRAM-SHA-256$4096:"), "{a}");
        assert_ne!(a, b, "each verifier gets its own salt");
        assert!(!a.contains("pencil"));
    }

    #[test]
    fn a_verifier_matches_its_password_only() {
        let stored = verifier("pencil");
        assert!(matches(&stored, "pencil"));
        assert!(!matches(&stored, "pencil2"));
        assert!(!matches("md5abcdef", "pencil"));
        assert!(!matches("SCRAM-SHA-256$x:y$z", "pencil"));
    }
}
