//! TLS and mutual TLS with certificates made in the test: a CA signs the server's and the
//! client's certificates.

mod common;

use std::path::Path;

use common::{simple_request, TestServer};
use nereid_grpc::client::{ClientOptions, GrpcClient};
use nereid_grpc::GrpcArgs;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "nereid test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        server: leaf(
            vec!["localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth),
        ca: ca.pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn args(dir: &Path, pki: &Pki, mutual: bool) -> GrpcArgs {
    GrpcArgs {
        grpc_use_ssl: true,
        grpc_use_ssl_mutual: mutual,
        grpc_server_cert: Some(write(dir, "server.pem", &pki.server.0)),
        grpc_server_key: Some(write(dir, "server.key", &pki.server.1)),
        grpc_root_cert: Some(write(dir, "ca.pem", &pki.ca)),
        ..GrpcArgs::default()
    }
}

async fn connect(
    server: &TestServer,
    tls: ClientTlsConfig,
) -> Result<GrpcClient, nereid_grpc::client::ClientError> {
    let url = format!("https://localhost:{}", server.addr.port());
    GrpcClient::connect_with(
        url,
        ClientOptions {
            tls: Some(tls),
            ..ClientOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = TestServer::start_with(args(dir.path(), &pki, false)).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let client = connect(&server, tls).await.unwrap();
    assert!(client.server_ready().await.unwrap());
    client.infer(simple_request(1)).await.unwrap();

    // Plaintext against a TLS port fails.
    let plain = GrpcClient::connect(format!("http://127.0.0.1:{}", server.addr.port())).await;
    if let Ok(c) = plain {
        assert!(
            c.server_live().await.is_err(),
            "plaintext was served on a TLS port"
        );
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = TestServer::start_with(args(dir.path(), &pki, true)).await;
    let trust = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca))
            .domain_name("localhost")
    };

    let with_cert = trust().identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    let client = connect(&server, with_cert).await.unwrap();
    client.infer(simple_request(2)).await.unwrap();

    // Without a client certificate the handshake (or the first call) fails.
    if let Ok(c) = connect(&server, trust()).await {
        assert!(
            c.server_live().await.is_err(),
            "a client without a certificate was served"
        );
    }
}
