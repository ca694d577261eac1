//! A one-request HTTPS/1.1 client over rustls: enough for CloudFormation's presigned response
//! URL and one MSK API call, without an HTTP client stack in the function.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("not an https URL: {0}")]
    Url(String),
    #[error("{host}: {source}")]
    Io {
        host: String,
        source: std::io::Error,
    },
    #[error("{0}: the answer is not HTTP")]
    Malformed(String),
    #[error("no trusted root certificates found on this system")]
    NoRoots,
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// A TLS connector trusting the system's roots (Amazon Trust Services on Lambda's al2023).
pub fn connector() -> Result<TlsConnector, HttpsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(HttpsError::NoRoots);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `https://host[:port]/path?query` → (host, port, "/path?query").
pub fn split_url(url: &str) -> Result<(&str, u16, &str), HttpsError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| HttpsError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse().map_err(|_| HttpsError::Url(url.to_owned()))?,
        ),
        None => (authority, 443),
    };
    if host.is_empty() {
        return Err(HttpsError::Url(url.to_owned()));
    }
    Ok((host, port, path))
}

/// Opens a TLS connection to `host:port`.
pub async fn connect(
    tls: &TlsConnector,
    host: &str,
    port: u16,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpsError> {
    let io = |source| HttpsError::Io {
        host: host.to_owned(),
        source,
    };
    let name =
        ServerName::try_from(host.to_owned()).map_err(|_| HttpsError::Url(host.to_owned()))?;
    let tcp = TcpStream::connect((host, port)).await.map_err(io)?;
    tcp.set_nodelay(true).map_err(io)?;
    tls.connect(name, tcp).await.map_err(io)
}

/// Sends one request (`Connection: close`) and returns the status and body.
pub async fn request(
    tls: &TlsConnector,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), HttpsError> {
    let (host, port, path) = split_url(url)?;
    let io = |source| HttpsError::Io {
        host: host.to_owned(),
        source,
    };
    let mut stream = connect(tls, host, port).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut answer = Vec::new();
    // Servers often close without TLS close_notify; what arrived before that is the answer.
    if let Err(error) = stream.read_to_end(&mut answer).await
        && (answer.is_empty() || error.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(io(error));
    }
    parse_response(host, &answer)
}

fn parse_response(host: &str, answer: &[u8]) -> Result<(u16, Vec<u8>), HttpsError> {
    let malformed = || HttpsError::Malformed(host.to_owned());
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| malformed())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(malformed)?;
    let mut body = answer[split + 4..].to_vec();
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        body = dechunk(&body).ok_or_else(malformed)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let url = "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/arn%3Aaws%3Acloudformation/x?X-Amz-Signature=ab";
        let (host, port, path) = split_url(url).expect("valid");
        assert_eq!(
            host,
            "cloudformation-custom-resource-response-useast1.s3.amazonaws.com"
        );
        assert_eq!(port, 443);
        assert_eq!(path, "/arn%3Aaws%3Acloudformation/x?X-Amz-Signature=ab");
        assert_eq!(
            split_url("https://example.com:8443").expect("valid"),
            ("example.com", 8443, "/")
        );
        assert!(split_url("http://example.com/").is_err());
    }

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            parse_response("h", plain).expect("ok"),
            (200, b"ok".to_vec())
        );
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response("h", chunked).expect("ok"),
            (404, b"abcde".to_vec())
        );
        assert!(parse_response("h", b"garbage").is_err());
    }
}
