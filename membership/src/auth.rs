//! Judging joiners: credentials travel in the join request and the coordinator asks its
//! [`Authenticator`]. A refusal's reason goes back to the joiner, whose `start` reports it.

use std::collections::BTreeMap;
use std::fmt;

use cohort_transport::MemberId;
use serde::{Deserialize, Serialize};

/// Security properties a joiner presents (Geode's `security-*` properties), e.g.
/// `security-username` and `security-password`, or a shared secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Property name to value.
    pub properties: BTreeMap<String, String>,
}

impl Credentials {
    /// Credentials with one property.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are secrets: show only which properties are present.
        f.debug_set().entries(self.properties.keys()).finish()
    }
}

/// Decides whether a member may join. Runs on the coordinator.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok` admits the member; `Err` carries the reason the joiner is told.
    fn authenticate(&self, member: &MemberId, credentials: &Credentials) -> Result<(), String>;
}

/// Admits everyone (for clusters secured by mutual TLS alone).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &MemberId, _: &Credentials) -> Result<(), String> {
        Ok(())
    }
}

/// Admits members presenting the cluster's shared secret in the `security-secret`
/// property, or a username and password from a fixed table (`security-username`,
/// `security-password`).
#[derive(Clone, Default)]
pub struct SharedSecret {
    secret: Option<String>,
    users: BTreeMap<String, String>,
}

impl SharedSecret {
    /// The property holding the shared secret.
    pub const SECRET: &'static str = "security-secret";
    /// The property holding the username.
    pub const USERNAME: &'static str = "security-username";
    /// The property holding the password.
    pub const PASSWORD: &'static str = "security-password";

    /// Accepts this shared secret.
    pub fn secret(secret: impl Into<String>) -> Self {
        SharedSecret {
            secret: Some(secret.into()),
            users: BTreeMap::new(),
        }
    }

    /// Also accepts this username and password.
    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.insert(username.into(), password.into());
        self
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSecret")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Authenticator for SharedSecret {
    fn authenticate(&self, _: &MemberId, credentials: &Credentials) -> Result<(), String> {
        let property = |name: &str| credentials.properties.get(name);
        if let (Some(expected), Some(given)) = (&self.secret, property(Self::SECRET)) {
            return match constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                true => Ok(()),
                false => Err("the shared secret does not match".into()),
            };
        }
        if let Some(username) = property(Self::USERNAME) {
            let password = property(Self::PASSWORD).map_or("", String::as_str);
            return match self.users.get(username) {
                Some(expected) if constant_time_eq(expected.as_bytes(), password.as_bytes()) => {
                    Ok(())
                }
                _ => Err(format!("unknown user {username:?} or wrong password")),
            };
        }
        Err(format!(
            "no credentials: expected {} or {} and {}",
            Self::SECRET,
            Self::USERNAME,
            Self::PASSWORD
        ))
    }
}

/// Compares without an early exit, so timing does not reveal how much of a secret matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_transport::MemberKind;

    fn member() -> MemberId {
        MemberId::new(
            "m",
            "127.0.0.1:1".parse().expect("literal"),
            MemberKind::Member,
        )
    }

    #[test]
    fn secrets_and_users_are_checked_and_reasons_given() {
        let auth = SharedSecret::secret("s3cret").user("ops", "pw");
        let m = member();
        assert!(
            auth.authenticate(
                &m,
                &Credentials::default().with(SharedSecret::SECRET, "s3cret")
            )
            .is_ok()
        );
        let wrong = auth.authenticate(
            &m,
            &Credentials::default().with(SharedSecret::SECRET, "nope"),
        );
        assert_eq!(wrong, Err("the shared secret does not match".into()));
        let user = Credentials::default()
            .with(SharedSecret::USERNAME, "ops")
            .with(SharedSecret::PASSWORD, "pw");
        assert!(auth.authenticate(&m, &user).is_ok());
        let bad_user = Credentials::default().with(SharedSecret::USERNAME, "ops");
        assert!(
            auth.authenticate(&m, &bad_user)
                .is_err_and(|r| r.contains("wrong password"))
        );
        assert!(
            auth.authenticate(&m, &Credentials::default())
                .is_err_and(|r| r.contains("no credentials"))
        );
        assert!(
            !format!("{user:?}").contains("pw"),
            "debug output hides values"
        );
    }
}
