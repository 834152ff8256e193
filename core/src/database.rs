//! The one way every process opens PostgreSQL: [`pool`] (a lazily
//! connecting pool) and [`Target::connect`] (one connection), both speaking
//! TLS as the URL's `sslmode` says, with libpq's meanings:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | |
//! | `allow`, `prefer` (default) | when the server offers it | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given: then as `verify-ca` |
//! | `verify-ca` | always | signed by a root of `sslrootcert` |
//! | `verify-full` | always | signed by a root of `sslrootcert`, and names the host |
//!
//! `sslrootcert` is a PEM file of root certificates (a managed database's CA
//! bundle); without it, or with `sslrootcert=system`, the system's roots are
//! used (libpq reads `~/.postgresql/root.crt` instead). `tokio-postgres`
//! knows neither `verify-*` nor `sslrootcert`, so they are read here and taken
//! out of the URL before it is parsed. TLS is rustls, as for object storage.
//!
//! A Unix socket (`postgres://user@%2Fvar%2Frun%2Fpostgresql/db`, or
//! `?host=/var/run/postgresql`) never speaks TLS, as with libpq: PostgreSQL
//! does not offer it there, so when every host is a socket `sslmode` is
//! ignored.
//!
//! A connection that cannot be made says where it was going
//! ([`ConnectError`]: `cannot connect to postgres://user@host:5432/db: …`,
//! never the password), so an operator with several URLs (`DATABASE_URL`,
//! `DATABASE_READ_URL`) sees which one is wrong.

use std::sync::Arc;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A database to connect to: the parsed URL and the TLS its `sslmode` asks for.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    tls: Tls,
}

impl std::str::FromStr for Target {
    type Err = String;

    /// Parses a `postgres://` URL or a `key=value` connection string. The
    /// error is the URL's, as text, without the URL (it may hold a password).
    fn from_str(url: &str) -> Result<Self, String> {
        let (mut config, ssl) = parse(url)?;
        let mode = ssl.mode.as_deref().unwrap_or("prefer");
        let (ssl_mode, check) = match (mode, &ssl.root_cert) {
            ("disable", _) => (SslMode::Disable, Check::Nothing),
            ("allow" | "prefer", _) => (SslMode::Prefer, Check::Nothing),
            ("require", None) => (SslMode::Require, Check::Nothing),
            ("require" | "verify-ca", _) => (SslMode::Require, Check::Issuer),
            ("verify-full", _) => (SslMode::Require, Check::IssuerAndName),
            (other, _) => {
                return Err(format!(
                    "unknown sslmode {other:?} (disable, allow, prefer, require, verify-ca or verify-full)"
                ))
            }
        };
        config.ssl_mode(if sockets_only(&config) {
            SslMode::Disable
        } else {
            ssl_mode
        });
        let tls = Tls(MakeRustlsConnect::new(client_config(
            check,
            ssl.root_cert.as_deref(),
        )?));
        Ok(Self { config, tls })
    }
}

impl Target {
    /// One connection, its connection task spawned on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ConnectError> {
        let (client, connection) =
            self.config
                .connect(self.tls.clone())
                .await
                .map_err(|error| ConnectError {
                    place: Place(&self.config).to_string(),
                    error,
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "database connection closed");
            }
        });
        Ok(client)
    }
}

/// A pool of connections to one database ([`pool`]), deadpool's, whose
/// errors say which database could not be reached (deadpool's own text,
/// `Error occurred while creating a new object: …`, repeated its cause and
/// named no host).
#[derive(Clone)]
pub struct Pool(managed::Pool<Connector>);

/// A connection taken from a [`Pool`]; it goes back when dropped.
pub type Object = managed::Object<Connector>;

impl Pool {
    /// A connection, waiting for one to come back when all are in use.
    pub async fn get(&self) -> Result<Object, PoolError> {
        self.0.get().await.map_err(PoolError::from)
    }

    /// A connection only if one is idle or may be opened now, without
    /// waiting for another to come back.
    pub async fn get_now(&self) -> Option<Object> {
        let now = managed::Timeouts {
            wait: Some(std::time::Duration::ZERO),
            ..managed::Timeouts::default()
        };
        self.0.timeout_get(&now).await.ok()
    }
}

/// Why a [`Pool`] gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The database could not be reached, or refused the login.
    #[error(transparent)]
    Connect(ConnectError),
    /// The pool's own: a timeout, or a closed pool.
    #[error("no database connection: {0}")]
    Pool(String),
}

impl From<managed::PoolError<ConnectError>> for PoolError {
    fn from(error: managed::PoolError<ConnectError>) -> Self {
        match error {
            managed::PoolError::Backend(e) => Self::Connect(e),
            other => Self::Pool(other.to_string()),
        }
    }
}

/// A pool of at most `size` connections to `url`; nothing connects until a
/// connection is asked for. The error is the URL's or the pool's, as text.
pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let target: Target = url.parse()?;
    let place = Place(&target.config).to_string();
    let manager = Manager::from_config(
        target.config,
        target.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    managed::Pool::builder(Connector { manager, place })
        .max_size(size.max(1))
        .build()
        .map(Pool)
        .map_err(|e| e.to_string())
}

/// deadpool-postgres' manager, with its connection errors naming the
/// database they were for: its own say only `error connecting to server`.
pub struct Connector {
    manager: Manager,
    place: String,
}

impl managed::Manager for Connector {
    type Type = ClientWrapper;
    type Error = ConnectError;

    async fn create(&self) -> Result<ClientWrapper, ConnectError> {
        managed::Manager::create(&self.manager)
            .await
            .map_err(|error| ConnectError {
                place: self.place.clone(),
                error,
            })
    }

    async fn recycle(
        &self,
        client: &mut ClientWrapper,
        metrics: &Metrics,
    ) -> RecycleResult<ConnectError> {
        managed::Manager::recycle(&self.manager, client, metrics)
            .await
            .map_err(|e| match e {
                RecycleError::Message(message) => RecycleError::Message(message),
                RecycleError::Backend(error) => RecycleError::Backend(ConnectError {
                    place: self.place.clone(),
                    error,
                }),
            })
    }

    fn detach(&self, client: &mut ClientWrapper) {
        managed::Manager::detach(&self.manager, client);
    }
}

/// A connection the pool could not open, and where to. Its text is whole
/// (`cannot connect to postgres://app@db:5432/activity: Connection refused
/// (os error 111)`; the server's own message when it refused the login);
/// [`ConnectError::postgres`] is the driver's error, for its SQLSTATE.
#[derive(Debug)]
pub struct ConnectError {
    place: String,
    error: tokio_postgres::Error,
}

impl ConnectError {
    pub fn postgres(&self) -> &tokio_postgres::Error {
        &self.error
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::error::Error as _;
        write!(f, "cannot connect to {}: ", self.place)?;
        // The driver's text is "error connecting to server: <cause>"; the
        // cause (or the server's message) is what says what went wrong.
        match (self.error.as_db_error(), self.error.source()) {
            (Some(db), _) => write!(f, "{} ({})", db.message(), db.code().code()),
            (None, Some(cause)) => write!(f, "{cause}"),
            (None, None) => write!(f, "{}", self.error),
        }
    }
}

// No `source()`: the text already holds the cause, and error reports that
// walk the chain (`{:#}`) would print it twice.
impl std::error::Error for ConnectError {}

/// A connection string's destination as a password-free URL:
/// `postgres://user@host:port[,host:port]/database`.
struct Place<'a>(&'a tokio_postgres::Config);

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = self.0;
        f.write_str("postgres://")?;
        if let Some(user) = config.get_user() {
            write!(f, "{user}@")?;
        }
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match host {
                Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]")?,
                Host::Tcp(name) => f.write_str(name)?,
                Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            // One port for every host, or one each, as libpq reads them.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            write!(f, ":{port}")?;
        }
        write!(
            f,
            "/{}",
            config
                .get_dbname()
                .or(config.get_user())
                .unwrap_or("postgres")
        )
    }
}

/// The URL parsed, without its TLS options, and those options. A URL must
/// name a host: found here rather than at the first connection, where the
/// pool's message named neither the setting nor the fix.
fn parse(url: &str) -> Result<(tokio_postgres::Config, SslOptions), String> {
    let (rest, ssl) = take_ssl_options(url)?;
    let config: tokio_postgres::Config = rest.parse().map_err(|e| format!("{e}"))?;
    if config.get_hosts().is_empty() {
        return Err("no host given (postgres://user:password@host:5432/database)".into());
    }
    Ok((config, ssl))
}

/// Whether every host is a Unix socket (a URL names at least one).
fn sockets_only(config: &tokio_postgres::Config) -> bool {
    config
        .get_hosts()
        .iter()
        .all(|host| !matches!(host, Host::Tcp(_)))
}

/// How a URL logs in, for `prod`'s check of it.
#[derive(Debug)]
pub struct Login {
    /// The password it gives (empty without one).
    pub password: String,
    /// `sslmode=verify-full`: a certificate login is possible.
    pub verify_full: bool,
    /// Every host is a Unix socket: the server can know the client's
    /// operating-system user (peer authentication).
    pub sockets_only: bool,
}

/// How `url` logs in, in either form of connection string; `None` when it
/// does not parse (connecting with it says why).
pub fn login(url: &str) -> Option<Login> {
    let (config, ssl) = parse(url).ok()?;
    Some(Login {
        password: String::from_utf8_lossy(config.get_password().unwrap_or_default()).into_owned(),
        verify_full: ssl.mode.as_deref() == Some("verify-full"),
        sockets_only: sockets_only(&config),
    })
}

/// rustls, asked for a connector for each host. `tokio-postgres` names no
/// host for a Unix socket, and rustls refuses an empty name, which failed
/// every socket connection before any `sslmode` was looked at. The name given
/// in its place is never used: PostgreSQL answers "no TLS" on a socket, and
/// `tokio-postgres` never starts a handshake without a host name.
#[derive(Clone)]
struct Tls(MakeRustlsConnect);

impl<S> MakeTlsConnect<S> for Tls
where
    MakeRustlsConnect: MakeTlsConnect<S>,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = if hostname.is_empty() {
            "unix-socket.invalid"
        } else {
            hostname
        };
        self.0.make_tls_connect(name)
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct SslOptions {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`?sslmode=…&…`) or a
/// `key=value` string (unquoted values), returning the rest.
fn take_ssl_options(url: &str) -> Result<(String, SslOptions), String> {
    let mut options = SslOptions::default();
    let mut keep = |key: &str, value: &str| match key {
        "sslmode" => {
            options.mode = Some(value.to_owned());
            false
        }
        "sslrootcert" => {
            options.root_cert = Some(value.to_owned());
            false
        }
        _ => true,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url).map_err(|e| format!("{e}"))?;
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let rest: Vec<&(String, String)> = pairs.iter().filter(|(k, v)| keep(k, v)).collect();
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        Ok((parsed.into(), options))
    } else {
        let rest: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| match pair.split_once('=') {
                Some((key, value)) => keep(key.trim(), value.trim()),
                None => true,
            })
            .collect();
        Ok((rest.join(" "), options))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Nothing,
    Issuer,
    IssuerAndName,
}

fn client_config(check: Check, root_cert: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(Unchecked(provider)),
        Check::Issuer | Check::IssuerAndName => {
            let roots = Arc::new(roots(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("TLS: {e}"))?;
            if check == Check::Issuer {
                Arc::new(AnyName(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The roots of `sslrootcert` (a PEM file), or the system's.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(format!("sslrootcert {path}: no certificate in it"));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err("no system root certificates found; give sslrootcert".into());
            }
        }
    }
    Ok(store)
}

/// `prefer`/`require`: encrypted, the certificate not checked (libpq's
/// meaning); the handshake's signatures still are.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last, so a name error
        // means the chain held.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_error_names_the_database_without_the_password() {
        let place = |url: &str| {
            let (config, _) = parse(url).expect("a URL");
            Place(&config).to_string()
        };
        assert_eq!(
            place("postgres://app:s3cret@db.internal:6432/activity?sslmode=require"),
            "postgres://app@db.internal:6432/activity"
        );
        // No port: 5432; no database: the user's name, as PostgreSQL does.
        assert_eq!(place("postgres://app@db"), "postgres://app@db:5432/app");
        assert_eq!(
            place("host=a,b port=1,2 user=app password=s3cret dbname=x"),
            "postgres://app@a:1,b:2/x"
        );
        assert_eq!(place("host=a,b port=7 dbname=x"), "postgres://a:7,b:7/x");
        assert_eq!(
            place("postgres://app@[::1]:5433/x"),
            "postgres://app@[::1]:5433/x"
        );
        assert_eq!(
            place("postgres://app@%2Fvar%2Frun%2Fpostgresql/x"),
            "postgres://app@/var/run/postgresql:5432/x"
        );
    }

    fn options(mode: Option<&str>, root_cert: Option<&str>) -> SslOptions {
        SslOptions {
            mode: mode.map(str::to_owned),
            root_cert: root_cert.map(str::to_owned),
        }
    }

    #[test]
    fn ssl_options_are_taken_out_of_urls_and_key_value_strings() {
        let cases = [
            (
                "postgres://u:p@db:5432/a?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
                "postgres://u:p@db:5432/a?application_name=x",
                options(Some("verify-full"), Some("/ca.pem")),
            ),
            (
                "postgresql://u@db/a?sslmode=require",
                "postgresql://u@db/a",
                options(Some("require"), None),
            ),
            ("postgres://u@db/a", "postgres://u@db/a", options(None, None)),
            (
                "host=db user=u sslmode=verify-ca sslrootcert=/ca.pem dbname=a",
                "host=db user=u dbname=a",
                options(Some("verify-ca"), Some("/ca.pem")),
            ),
        ];
        for (url, rest, expected) in cases {
            let (left, taken) = take_ssl_options(url).expect("parses");
            assert_eq!(left, rest, "{url}");
            assert_eq!(taken, expected, "{url}");
        }
    }

    #[test]
    fn a_url_without_a_host_is_refused_before_connecting() {
        for url in ["", "postgres:///activity", "dbname=activity"] {
            let error = url.parse::<Target>().err().expect(url);
            assert!(error.contains("no host"), "{url}: {error}");
        }
        assert!("postgres://postgres@127.0.0.1:5432/activity"
            .parse::<Target>()
            .is_ok());
    }

    #[test]
    fn every_libpq_sslmode_is_understood_and_others_are_refused() {
        for (mode, expected) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let target: Target = format!("postgres://u@db/a?sslmode={mode}")
                .parse()
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert_eq!(target.config.get_ssl_mode(), expected, "{mode}");
        }
        let default: Target = "postgres://u@db/a".parse().expect("parses");
        assert_eq!(default.config.get_ssl_mode(), SslMode::Prefer);
        let error = "postgres://u:secret@db/a?sslmode=verify_full"
            .parse::<Target>()
            .err()
            .expect("refused");
        assert!(error.contains("unknown sslmode \"verify_full\""), "{error}");
        assert!(!error.contains("secret"), "{error}");
        let missing = "postgres://u@db/a?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
            .parse::<Target>()
            .err()
            .expect("refused");
        assert!(
            missing.contains("sslrootcert /nonexistent/ca.pem"),
            "{missing}"
        );
    }
}
