//! The key pepper from Secrets Manager, on a real moto server.

use keen_aws::secrets::{PepperError, resolve_pepper};
use keen_testkit::MotoServer;

#[tokio::test]
async fn a_secret_arn_resolves_to_the_secret_string() {
    let moto = MotoServer::start();
    let secrets = moto.secrets_manager();
    let created = secrets
        .create_secret()
        .name("keen/key-pepper")
        .secret_string("a pepper from secrets manager, 44 bytes long")
        .send()
        .await
        .expect("secret created");
    let arn = created.arn().expect("arn");
    assert!(arn.starts_with("arn:aws:secretsmanager:"), "{arn}");

    let pepper = resolve_pepper(arn, &moto.sdk_config())
        .await
        .expect("resolved");
    assert_eq!(
        pepper.as_bytes(),
        b"a pepper from secrets manager, 44 bytes long"
    );

    let short = secrets
        .create_secret()
        .name("keen/short")
        .secret_string("too short")
        .send()
        .await
        .expect("secret created");
    let error = resolve_pepper(short.arn().expect("arn"), &moto.sdk_config())
        .await
        .expect_err("9 bytes");
    assert!(
        matches!(error, PepperError::TooShort { length: 9 }),
        "{error}"
    );
    assert!(!error.to_string().contains("too short"), "{error}");

    let missing = arn.replace("keen/key-pepper", "keen/absent");
    let error = resolve_pepper(&missing, &moto.sdk_config())
        .await
        .expect_err("no such secret");
    assert!(
        matches!(error, PepperError::SecretsManager { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("keen/absent"), "{error}");
}
