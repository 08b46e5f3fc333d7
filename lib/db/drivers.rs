//! The connections behind each backend, chosen so that a build needs the
//! Rust toolchain and a C compiler and no database client library:
//!
//! - SQLite: diesel's own connection over the bundled amalgamation
//!   (`libsqlite3-sys` with `bundled`, compiled by `cc`);
//! - PostgreSQL: tokio-postgres, TLS by rustls (ring);
//! - MySQL/MariaDB: mysql_async, TLS by rustls (ring).
//!
//! The two pure-Rust drivers are async; diesel-async's
//! `AsyncConnectionWrapper` gives them diesel's synchronous `Connection`
//! (the same backend types, query DSL, raw SQL and migrations), each
//! connection driving its own single-threaded tokio runtime.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use diesel::ConnectionResult;
use diesel_async::async_connection_wrapper::{AsyncConnectionWrapper, BlockOn};
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};

pub use diesel::sqlite::SqliteConnection;

/// A PostgreSQL connection with diesel's synchronous API.
pub type PgConnection = AsyncConnectionWrapper<AsyncPgConnection, Runtime>;
/// A MySQL/MariaDB connection with diesel's synchronous API.
pub type MysqlConnection = AsyncConnectionWrapper<AsyncMysqlConnection, Runtime>;

/// The runtime a wrapped connection blocks on: a current-thread tokio
/// runtime of its own. The connection is made on the runtime that then
/// carries it (a PostgreSQL connection's reader task lives there), handed
/// over through `NEXT` when the wrapper is built.
pub struct Runtime(tokio::runtime::Runtime);

thread_local! {
    static NEXT: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

fn new_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime needs no resources that can be missing")
}

impl BlockOn for Runtime {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.0.block_on(f)
    }

    fn get_runtime() -> Self {
        Runtime(
            NEXT.with(|n| n.borrow_mut().take())
                .unwrap_or_else(new_runtime),
        )
    }
}

/// Connect on a runtime of its own and wrap the connection with that
/// runtime.
fn wrap<C, F>(connect: F) -> ConnectionResult<AsyncConnectionWrapper<C, Runtime>>
where
    C: diesel_async::AsyncConnection,
    F: Future<Output = ConnectionResult<C>>,
{
    let rt = new_runtime();
    let conn = rt.block_on(connect)?;
    NEXT.with(|n| *n.borrow_mut() = Some(rt));
    Ok(AsyncConnectionWrapper::from(conn))
}

/// Open a PostgreSQL connection from a libpq-style URL (`postgres://` or
/// `postgresql://`, percent-encoded user and password, `sslmode=disable`,
/// `prefer` (the default) or `require`). As libpq's `require`, TLS
/// encrypts without checking the server's certificate.
pub fn connect_postgres(url: &str) -> ConnectionResult<PgConnection> {
    let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        diesel::ConnectionError::InvalidConnectionUrl(e.to_string())
    })?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_encrypt_only());
    wrap(async move {
        let (client, connection) = config
            .connect(tls)
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(with_sources(&e)))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    })
}

/// An error and what caused it, on one line: tokio-postgres says "db
/// error" and keeps the server's words in the error's source.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !line.contains(&said) {
            line = format!("{line}: {said}");
        }
        cause = c.source();
    }
    line
}

/// Open a MySQL/MariaDB connection from a `mysql://` URL (mysql_async's
/// options: `require_ssl=true` for TLS, `verify_ca=false` for a server
/// with a certificate of its own making).
pub fn connect_mysql(url: &str) -> ConnectionResult<MysqlConnection> {
    wrap(<AsyncMysqlConnection as diesel_async::AsyncConnection>::establish(url))
}

/// TLS that encrypts and does not check the server's certificate: what
/// libpq's `sslmode=require` and `prefer` promise.
fn tls_encrypt_only() -> rustls::ClientConfig {
    // ring, not aws-lc-rs: it builds with a C compiler alone. Its lack of
    // post-quantum key exchange (rustls 0.23.48's deprecation) is no loss
    // beside a mode that checks no certificate.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // The handshake's signatures are still checked: the session is
    // encrypted to whoever holds the presented certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
