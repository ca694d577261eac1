//! Configuration, read one way everywhere: from an [`Env`] (the process environment, or a
//! test's pairs), each value parsed where it is read, and a missing or malformed one a
//! [`ConfigError`] that names the variable and says what it must be. A process refuses to start
//! on any of them: a typo never silently becomes a default.
//!
//! The backing cluster's client settings ([`BackingSettings`]) live here too: the gateway's
//! producer and the local event source mapping take the same `BACKING_*` variables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required: {what}")]
    Missing {
        var: &'static str,
        what: &'static str,
    },
    #[error("{var}={value:?} is not valid: {what}")]
    Invalid {
        var: &'static str,
        value: String,
        what: &'static str,
    },
}

/// Where values come from. An empty value is no value, as shells and CloudFormation leave
/// optional variables empty.
pub struct Env<'a> {
    lookup: Box<dyn Fn(&str) -> Option<String> + 'a>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env<'static> {
    /// The process environment.
    pub fn process() -> Self {
        Env::from_lookup(|var| std::env::var(var).ok())
    }

    /// Fixed pairs (tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Env::from_lookup(move |var| map.get(var).cloned())
    }
}

impl<'a> Env<'a> {
    /// Any lookup (a test's map, a layered environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            lookup: Box::new(move |var| lookup(var).filter(|value| !value.trim().is_empty())),
        }
    }

    /// The value, if set.
    pub fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
    }

    /// The value, or the default.
    pub fn get_or(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_owned())
    }

    /// The value; `what` says what it is when it is missing.
    pub fn required(&self, var: &'static str, what: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing { var, what })
    }

    /// The value parsed, if set; `what` says what it must be.
    pub fn parsed<T: FromStr>(
        &self,
        var: &'static str,
        what: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        self.get(var)
            .map(|value| parse(value, var, what))
            .transpose()
    }

    /// A whole number (`_` separators allowed), or the default when unset.
    pub fn number<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError> {
        match self.get(var) {
            Some(value) => parse(value.replace('_', ""), var, "a whole number"),
            None => Ok(default),
        }
    }

    /// A whole number within `range`, or the default when unset; `what` says the range.
    pub fn number_in<T: FromStr + PartialOrd>(
        &self,
        var: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
        what: &'static str,
    ) -> Result<T, ConfigError> {
        let value = self.number(var, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                var,
                value: self.get(var).unwrap_or_default(),
                what,
            })
        }
    }

    /// Whole milliseconds, or the default when unset.
    pub fn millis(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(var) {
            Some(value) => parse::<u64>(value.replace('_', ""), var, "whole milliseconds")
                .map(Duration::from_millis),
            None => Ok(default),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); unset is false.
    pub fn flag(&self, var: &'static str) -> Result<bool, ConfigError> {
        match self.get(var).as_deref().map(str::trim) {
            None | Some("0" | "false" | "no" | "off") => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some(other) => Err(ConfigError::Invalid {
                var,
                value: other.to_owned(),
                what: "true or false",
            }),
        }
    }
}

fn parse<T: FromStr>(
    value: String,
    var: &'static str,
    what: &'static str,
) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::Invalid { var, value, what })
}

/// How to reach and authenticate to the backing cluster (MSK: `SASL_SSL` with SCRAM-SHA-512 on
/// port 9096): the gateway's producer and the local event source mapping take the same
/// `BACKING_*` variables, so one environment file drives both.
#[derive(Clone, PartialEq, Eq)]
pub struct BackingSettings {
    /// `BACKING_BOOTSTRAP`.
    pub bootstrap: String,
    /// `BACKING_SECURITY_PROTOCOL`: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub security_protocol: Option<String>,
    /// `BACKING_SASL_MECHANISM`: `SCRAM-SHA-512` (MSK) or `SCRAM-SHA-256`.
    pub sasl_mechanism: Option<String>,
    /// `BACKING_SASL_USERNAME`.
    pub sasl_username: Option<String>,
    /// `BACKING_SASL_PASSWORD`; never logged (`Debug` redacts it).
    pub sasl_password: Option<String>,
    /// `BACKING_SSL_CA_LOCATION`: a CA bundle for the cluster's certificates.
    pub ssl_ca_location: Option<PathBuf>,
}

impl std::fmt::Debug for BackingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackingSettings")
            .field("bootstrap", &self.bootstrap)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("ssl_ca_location", &self.ssl_ca_location)
            .finish()
    }
}

impl BackingSettings {
    /// Reads `BACKING_BOOTSTRAP` (required; `what` says what it is for this process),
    /// `BACKING_SECURITY_PROTOCOL`, `BACKING_SASL_MECHANISM`, `BACKING_SASL_USERNAME`,
    /// `BACKING_SASL_PASSWORD` and `BACKING_SSL_CA_LOCATION`.
    pub fn from_env(env: &Env<'_>, what: &'static str) -> Result<Self, ConfigError> {
        Ok(BackingSettings {
            bootstrap: env.required("BACKING_BOOTSTRAP", what)?,
            security_protocol: env.get("BACKING_SECURITY_PROTOCOL"),
            sasl_mechanism: env.get("BACKING_SASL_MECHANISM"),
            sasl_username: env.get("BACKING_SASL_USERNAME"),
            sasl_password: env.get("BACKING_SASL_PASSWORD"),
            ssl_ca_location: env.get("BACKING_SSL_CA_LOCATION").map(PathBuf::from),
        })
    }

    /// The librdkafka properties these settings set (`bootstrap.servers`, `security.protocol`,
    /// `sasl.*`, `ssl.ca.location`), for any client.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = vec![("bootstrap.servers", self.bootstrap.clone())];
        let optional = [
            ("security.protocol", &self.security_protocol),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                properties.push((key, value.clone()));
            }
        }
        if let Some(ca) = &self.ssl_ca_location {
            properties.push(("ssl.ca.location", ca.display().to_string()));
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_value_names_the_variable_and_what_it_must_be() {
        let env = Env::from_pairs([("EVENT_SHARDS", "sixteen"), ("FLAG", "maybe")]);
        let error = env
            .number::<u16>("EVENT_SHARDS", 16)
            .expect_err("malformed");
        assert_eq!(
            error.to_string(),
            "EVENT_SHARDS=\"sixteen\" is not valid: a whole number"
        );
        assert!(
            env.flag("FLAG")
                .expect_err("malformed")
                .to_string()
                .contains("FLAG")
        );
        assert_eq!(
            env.required("KEYS_TABLE", "the Keys table's name")
                .expect_err("missing")
                .to_string(),
            "KEYS_TABLE is required: the Keys table's name"
        );
    }

    #[test]
    fn unset_and_empty_take_the_default_and_separators_are_allowed() {
        let env = Env::from_pairs([("EMPTY", " "), ("BIG", "16_777_216"), ("MS", "250")]);
        assert_eq!(env.number("EMPTY", 7u32), Ok(7));
        assert_eq!(env.number("UNSET", 7u32), Ok(7));
        assert_eq!(env.number("BIG", 0u64), Ok(16_777_216));
        assert_eq!(
            env.millis("MS", Duration::ZERO),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(env.get("EMPTY"), None);
        assert_eq!(
            env.number_in("BIG", 1u64, 1..=10, "1 to 10")
                .expect_err("out of range")
                .to_string(),
            "BIG=\"16_777_216\" is not valid: 1 to 10"
        );
    }

    #[test]
    fn backing_settings_never_show_the_password() {
        let env = Env::from_pairs([
            ("BACKING_BOOTSTRAP", "b-1:9096"),
            ("BACKING_SASL_PASSWORD", "s3cret-value"),
            ("BACKING_SECURITY_PROTOCOL", "SASL_SSL"),
        ]);
        let settings = BackingSettings::from_env(&env, "the backing cluster").expect("settings");
        assert!(!format!("{settings:?}").contains("s3cret-value"));
        assert!(
            settings
                .client_properties()
                .contains(&("sasl.password", "s3cret-value".into()))
        );
        assert_eq!(
            settings.client_properties()[0],
            ("bootstrap.servers", "b-1:9096".into())
        );
        assert!(matches!(
            BackingSettings::from_env(&Env::from_pairs::<&str, &str>([]), "needed"),
            Err(ConfigError::Missing {
                var: "BACKING_BOOTSTRAP",
                ..
            })
        ));
    }
}
