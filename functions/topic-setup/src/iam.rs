//! SigV4 with the function's own credentials: the MSK IAM SASL token (the format of AWS's
//! aws-msk-iam-sasl-signer libraries) and the signed GetBootstrapBrokers call.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningInstructions, SigningParams,
    SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::{Duration, SystemTime};

/// RFC 3986 unreserved characters stay; everything else is encoded (SigV4's rule).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

const USER_AGENT: &str = concat!("keen-topic-setup/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("AWS credentials missing from the environment ({0}); Lambda sets them")]
    MissingCredentials(&'static str),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The function's credentials, as Lambda puts them in the environment.
pub fn credentials_from_env() -> Result<Credentials, SigningError> {
    let var = |name: &'static str| {
        std::env::var(name).map_err(|_| SigningError::MissingCredentials(name))
    };
    Ok(Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        std::env::var("AWS_SESSION_TOKEN").ok(),
        None,
        "environment",
    ))
}

fn signing_settings(location: SignatureLocation) -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.signature_location = location;
    if location == SignatureLocation::QueryParams {
        settings.expires_in = Some(Duration::from_secs(900));
    }
    settings
}

/// SigV4 for a GET of `url` (already encoded) with an empty body.
fn sign_get(
    credentials: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    host: &str,
    location: SignatureLocation,
    now: SystemTime,
) -> Result<SigningInstructions, SigningError> {
    let failed = |e: &dyn std::fmt::Display| SigningError::Sign(e.to_string());
    let identity = credentials.clone().into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(signing_settings(location))
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let request = SignableRequest::new(
        "GET",
        url,
        [("host", host)].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| failed(&e))?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
    Ok(instructions)
}

/// The OAUTHBEARER token MSK's IAM listener (port 9098) takes: a presigned
/// `kafka-cluster:Connect` URL with a User-Agent, base64url without padding.
pub fn msk_auth_token(
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
) -> Result<String, SigningError> {
    let host = format!("kafka.{region}.amazonaws.com");
    let url = format!("https://{host}/?Action=kafka-cluster%3AConnect");
    let instructions = sign_get(
        credentials,
        region,
        "kafka-cluster",
        &url,
        &host,
        SignatureLocation::QueryParams,
        now,
    )?;
    let mut presigned = url;
    for (name, value) in instructions.params() {
        presigned.push('&');
        presigned.push_str(name);
        presigned.push('=');
        presigned.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    presigned.push_str("&User-Agent=");
    presigned.extend(utf8_percent_encode(USER_AGENT, QUERY_VALUE));
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned))
}

/// The SASL/OAUTHBEARER initial client response (RFC 7628) carrying `token`.
pub fn oauthbearer_client_response(token: &str) -> Vec<u8> {
    format!("n,,\u{1}auth=Bearer {token}\u{1}\u{1}").into_bytes()
}

/// URL and signed headers of MSK's GetBootstrapBrokers for `cluster_arn`.
pub fn bootstrap_brokers_request(
    credentials: &Credentials,
    region: &str,
    cluster_arn: &str,
    now: SystemTime,
) -> Result<(String, Vec<(String, String)>), SigningError> {
    let host = format!("kafka.{region}.amazonaws.com");
    let url = format!(
        "https://{host}/v1/clusters/{}/bootstrap-brokers",
        utf8_percent_encode(cluster_arn, QUERY_VALUE)
    );
    let instructions = sign_get(
        credentials,
        region,
        "kafka",
        &url,
        &host,
        SignatureLocation::Headers,
        now,
    )?;
    let headers = instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    Ok((url, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("token/+=".into()),
            None,
            "test",
        )
    }

    #[test]
    fn the_token_is_a_presigned_connect_url() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = msk_auth_token(&credentials(), "us-east-1", now).expect("signed");
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&token)
                .expect("base64url"),
        )
        .expect("utf-8");
        assert!(
            url.starts_with(
                "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=token%2F%2B%3D",
            "X-Amz-Signature=",
            "User-Agent=keen-topic-setup%2F",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        // Deterministic for the same inputs.
        assert_eq!(
            token,
            msk_auth_token(&credentials(), "us-east-1", now).expect("signed")
        );
    }

    #[test]
    fn the_bootstrap_call_is_signed_for_the_kafka_service() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/c/0b2c-4";
        let (url, headers) =
            bootstrap_brokers_request(&credentials(), "eu-west-1", arn, now).expect("signed");
        assert_eq!(
            url,
            "https://kafka.eu-west-1.amazonaws.com/v1/clusters/arn%3Aaws%3Akafka%3Aeu-west-1%3A123456789012%3Acluster%2Fc%2F0b2c-4/bootstrap-brokers"
        );
        let authorization = headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_str())
            .expect("authorization header");
        assert!(
            authorization.contains("/eu-west-1/kafka/aws4_request"),
            "{authorization}"
        );
        assert!(headers.iter().any(|(n, _)| n == "x-amz-security-token"));
    }

    #[test]
    fn oauthbearer_framing() {
        assert_eq!(
            oauthbearer_client_response("abc"),
            b"n,,\x01auth=Bearer abc\x01\x01".to_vec()
        );
    }
}
