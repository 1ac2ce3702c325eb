//! What the operator knows about the tenant passwords it has set, so that
//! checking a password in the steady state costs neither a PBKDF2 run (a
//! few milliseconds of CPU per Tenant and pass) nor, for an admin that may
//! not read `pg_authid`, a write transaction.
//!
//! Only SHA-256 digests are kept: a memory dump shows no password, and no
//! verifier that could be replayed.
//!
//! Kept in memory per database server: after a restart, a leader change or
//! a change of the server's connection details, each password is checked
//! (superuser admin) or set (other admins) once more. An admin that cannot
//! read `pg_authid` cannot see a password someone changed behind the
//! operator's back; that is repaired by the next restart or leader change,
//! or at once by rotating the tenant's Secret.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::scram;

type Sha = [u8; 32];

fn sha(text: &str) -> Sha {
    Sha256::digest(text.as_bytes()).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    password: Sha,
    verifier: Sha,
}

/// Per role: the password last set or verified, and the verifier stored for it.
#[derive(Debug, Default)]
pub struct PasswordMemo {
    known: Mutex<HashMap<String, Known>>,
}

impl PasswordMemo {
    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The role's password was just set to `password`, stored as `verifier`.
    pub(crate) fn remember(&self, role: &str, password: &str, verifier: &str) {
        self.known().insert(role.to_owned(), Known { password: sha(password), verifier: sha(verifier) });
    }

    /// Whether `stored` (read from `pg_authid`) was made from `password`:
    /// answered from memory when it is the verifier last seen for this
    /// password, else recomputed (and remembered when it matches).
    pub(crate) fn stored_matches(&self, role: &str, stored: &str, password: &str) -> bool {
        let seen = Known { password: sha(password), verifier: sha(stored) };
        if self.known().get(role) == Some(&seen) {
            return true;
        }
        let matches = scram::matches(stored, password);
        if matches {
            self.known().insert(role.to_owned(), seen);
        }
        matches
    }

    /// Whether the operator set (or verified) `password` on the role since
    /// it started: for an admin that cannot read what is stored.
    pub(crate) fn was_set(&self, role: &str, password: &str) -> bool {
        self.known().get(role).is_some_and(|known| known.password == sha(password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_password_is_recognised_without_recomputing_and_others_are_not() {
        let memo = PasswordMemo::default();
        let verifier = scram::verifier("right");
        assert!(!memo.was_set("r", "right"));
        memo.remember("r", "right", &verifier);
        assert!(memo.was_set("r", "right"));
        assert!(!memo.was_set("r", "rotated"));
        assert!(!memo.was_set("other", "right"));
        assert!(memo.stored_matches("r", &verifier, "right"));
        assert!(!memo.stored_matches("r", &verifier, "wrong"), "recomputed: does not match");
        let changed_behind_our_back = scram::verifier("someone-else's");
        assert!(!memo.stored_matches("r", &changed_behind_our_back, "right"));
    }

    #[test]
    fn a_verifier_made_elsewhere_from_the_same_password_is_learnt() {
        let memo = PasswordMemo::default();
        let verifier = scram::verifier("pw");
        assert!(memo.stored_matches("r", &verifier, "pw"));
        assert!(memo.was_set("r", "pw"));
    }
}
