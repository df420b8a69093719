//! A configuration secret that never prints.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret from the config (or an environment variable): an HMAC key, a routing key, a URL
/// holding a token. `Debug` and `Serialize` write `[redacted]`; [`Secret::expose`] is the only
/// way to the value, for the request that needs it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The value itself: only for building the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Fill `secret` from the environment variable `env` where one is named. Pushes an error (with
/// `path`, naming `field`) when both or neither are given and `required`, or the variable is
/// unset or empty.
pub(crate) fn resolve(
    secret: &mut Option<Secret>,
    env: Option<&str>,
    path: &str,
    field: &str,
    required: bool,
    errors: &mut Vec<String>,
) {
    match (secret.as_ref(), env) {
        (Some(_), Some(_)) => errors.push(format!("{path}: give {field} or {field}_env, not both")),
        (Some(s), None) if s.is_empty() => {
            errors.push(format!("{path}.{field}: must not be empty"))
        }
        (Some(_), None) => {}
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => *secret = Some(Secret(v)),
            Ok(_) => errors.push(format!(
                "{path}.{field}_env: environment variable {var:?} is empty"
            )),
            Err(_) => errors.push(format!(
                "{path}.{field}_env: environment variable {var:?} is not set"
            )),
        },
        (None, None) if required => errors.push(format!(
            "{path}.{field}: is required (or {field}_env naming an environment variable)"
        )),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        let back: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(back.expose(), "hunter2");
    }

    #[test]
    fn from_the_environment() {
        std::env::set_var("AVMON_TEST_SECRET_X", "s3");
        let mut s = None;
        let mut errors = Vec::new();
        resolve(
            &mut s,
            Some("AVMON_TEST_SECRET_X"),
            "n[0]",
            "secret",
            true,
            &mut errors,
        );
        assert_eq!(s.unwrap().expose(), "s3");
        let mut s = None;
        resolve(
            &mut s,
            Some("AVMON_TEST_SECRET_UNSET"),
            "n[0]",
            "secret",
            true,
            &mut errors,
        );
        resolve(&mut None, None, "n[1]", "secret", true, &mut errors);
        let mut both = Some(Secret::new("a"));
        resolve(&mut both, Some("X"), "n[2]", "secret", true, &mut errors);
        assert_eq!(
            errors,
            [
                "n[0].secret_env: environment variable \"AVMON_TEST_SECRET_UNSET\" is not set",
                "n[1].secret: is required (or secret_env naming an environment variable)",
                "n[2]: give secret or secret_env, not both",
            ]
        );
    }
}
