//! The key pepper: the server-side secret under which key digests and unknown projects' fake
//! salts are computed (architecture.md "Keys table").
//!
//! Contract:
//! - [`load_pepper`] reads `KEY_PEPPER`. A value that is a Secrets Manager ARN
//!   (`arn:<partition>:secretsmanager:…`) is resolved to that secret's SecretString (or its
//!   SecretBinary), so deployments keep the pepper out of the function's configuration; any other
//!   value is the pepper itself (local stacks and tests).
//! - A pepper is at least [`MIN_PEPPER_LEN`] bytes and used exactly as given, without trimming:
//!   every component that derives digests must arrive at the same bytes.
//! - The pepper never appears in a `Debug` output or an error message.

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use std::fmt;

/// The variable the functions read.
pub const PEPPER_ENV: &str = "KEY_PEPPER";
/// Shortest accepted pepper (128 bits, if random).
pub const MIN_PEPPER_LEN: usize = 16;

/// The pepper's bytes; `Debug` redacts them.
#[derive(Clone, PartialEq, Eq)]
pub struct Pepper(Vec<u8>);

impl Pepper {
    /// Refuses an empty pepper or one shorter than [`MIN_PEPPER_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, PepperError> {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Err(PepperError::Empty),
            length if length < MIN_PEPPER_LEN => Err(PepperError::TooShort { length }),
            _ => Ok(Pepper(bytes)),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// Why no pepper could be had. Messages never contain the pepper.
#[derive(Debug, thiserror::Error)]
pub enum PepperError {
    #[error(
        "{var} is not set: set it to the key pepper (at least 16 bytes) or to the ARN of a \
         Secrets Manager secret holding it"
    )]
    Missing { var: String },
    #[error("{var} is not valid UTF-8: set it to the pepper or to a secret's ARN")]
    NotUnicode { var: String },
    #[error(
        "the key pepper is empty: a pepper must be at least 16 bytes (generate one with \
         `openssl rand -hex 32`)"
    )]
    Empty,
    #[error(
        "the key pepper is {length} bytes long; it must be at least 16 bytes (generate one with \
         `openssl rand -hex 32`)"
    )]
    TooShort { length: usize },
    #[error("reading secret {arn} from Secrets Manager failed: {message}")]
    SecretsManager { arn: String, message: String },
    #[error("secret {arn} has neither a SecretString nor a SecretBinary")]
    NoSecretValue { arn: String },
}

/// The pepper named by `KEY_PEPPER`.
pub async fn load_pepper(config: &aws_config::SdkConfig) -> Result<Pepper, PepperError> {
    load_pepper_from_env(PEPPER_ENV, config).await
}

/// The pepper named by the environment variable `var` (the CLI's `--pepper-env`).
pub async fn load_pepper_from_env(
    var: &str,
    config: &aws_config::SdkConfig,
) -> Result<Pepper, PepperError> {
    let value = match std::env::var(var) {
        Ok(value) => value,
        Err(std::env::VarError::NotPresent) => {
            return Err(PepperError::Missing {
                var: var.to_owned(),
            });
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(PepperError::NotUnicode {
                var: var.to_owned(),
            });
        }
    };
    resolve_pepper(&value, config).await
}

/// `value` itself, or the secret it names when it is a Secrets Manager ARN.
pub async fn resolve_pepper(
    value: &str,
    config: &aws_config::SdkConfig,
) -> Result<Pepper, PepperError> {
    if is_secret_arn(value) {
        let client = aws_sdk_secretsmanager::Client::new(config);
        fetch_pepper(&client, value).await
    } else {
        Pepper::new(value.as_bytes())
    }
}

/// The pepper held by the secret `arn`.
pub async fn fetch_pepper(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<Pepper, PepperError> {
    let secret = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| PepperError::SecretsManager {
            arn: arn.to_owned(),
            message: DisplayErrorContext(&error).to_string(),
        })?;
    if let Some(text) = secret.secret_string() {
        Pepper::new(text.as_bytes())
    } else if let Some(blob) = secret.secret_binary() {
        Pepper::new(blob.as_ref())
    } else {
        Err(PepperError::NoSecretValue {
            arn: arn.to_owned(),
        })
    }
}

/// `arn:aws:secretsmanager:…`, in any partition (`aws-cn`, `aws-us-gov`).
pub fn is_secret_arn(value: &str) -> bool {
    let mut parts = value.splitn(4, ':');
    parts.next() == Some("arn")
        && parts
            .next()
            .is_some_and(|partition| partition.starts_with("aws"))
        && parts.next() == Some("secretsmanager")
        && parts.next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peppers_are_at_least_16_bytes() {
        assert!(matches!(Pepper::new(""), Err(PepperError::Empty)));
        let error = Pepper::new("fifteen bytes!!").expect_err("15 bytes");
        assert!(matches!(error, PepperError::TooShort { length: 15 }));
        assert!(error.to_string().contains("at least 16 bytes"), "{error}");
        assert!(!error.to_string().contains("fifteen"), "{error}");
        let pepper = Pepper::new("sixteen bytes!!!").expect("16 bytes");
        assert_eq!(pepper.as_bytes(), b"sixteen bytes!!!");
        assert_eq!(format!("{pepper:?}"), "Pepper(<redacted>)");
    }

    #[test]
    fn secret_arns_are_recognised() {
        for arn in [
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:pepper-AbCdEf",
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:pepper",
        ] {
            assert!(is_secret_arn(arn), "{arn}");
        }
        for value in [
            "arn:aws:ssm:us-east-1:123456789012:parameter/pepper",
            "a plain pepper of enough bytes",
            "arn:aws:secretsmanager",
        ] {
            assert!(!is_secret_arn(value), "{value}");
        }
    }

    #[tokio::test]
    async fn a_plain_value_is_the_pepper() {
        let config = aws_config::SdkConfig::builder().build();
        let pepper = resolve_pepper("a local pepper, 32 bytes long!!", &config)
            .await
            .expect("plain");
        assert_eq!(pepper.as_bytes(), b"a local pepper, 32 bytes long!!");
        assert!(matches!(
            resolve_pepper("short", &config).await,
            Err(PepperError::TooShort { length: 5 })
        ));
    }
}
