//! TLS of HTTPS health checks (`kind = "https"` in `[services.health]`): which roots verify
//! the backend's certificate (the system's, or a configured CA file), the name it must carry
//! (also sent as SNI), and an optional client certificate. [`TlsSettings::client_config`]
//! builds the rustls client configuration (ring as the crypto provider); the validation calls
//! it too, so unreadable or unparsable files are configuration errors (exit 64).

use std::{path::PathBuf, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};
use serde::{Deserialize, Serialize};

/// Validated TLS settings of an HTTPS check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TlsSettings {
    /// PEM file of the CA certificates that may sign the backends' certificates; `None`:
    /// the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry, sent as SNI (a DNS name or an IP address);
    /// `None`: the check's `host`, else the address.
    pub server_name: Option<String>,
    /// PEM files of a client certificate (chain) and its private key, both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Why a TLS client configuration could not be built: (field, message).
pub type TlsProblem = (&'static str, String);

fn certs(field: &'static str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsProblem> {
    let list: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| (field, format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| (field, format!("{}: {e}", path.display())))?;
    if list.is_empty() {
        return Err((
            field,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(list)
}

impl TlsSettings {
    /// The name verified and sent as SNI: `server_name`, else `host`, else `address`.
    pub fn name_for(&self, host: Option<&str>, address: std::net::IpAddr) -> String {
        self.server_name
            .clone()
            .or_else(|| host.map(|h| h.split(':').next().unwrap_or(h).to_owned()))
            .unwrap_or_else(|| address.to_string())
    }

    /// Whether `name` can be a TLS server name (a DNS name or an IP address).
    pub fn valid_name(name: &str) -> bool {
        ServerName::try_from(name.to_owned()).is_ok()
    }

    /// The rustls client configuration: roots (the CA file or the system's), the client
    /// certificate if configured. Reads the files each time it is called.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsProblem> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                for c in certs("ca", path)? {
                    roots
                        .add(c)
                        .map_err(|e| ("ca", format!("{}: {e}", path.display())))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    return Err((
                        "ca",
                        format!(
                            "no system root certificates could be loaded ({} errors); configure ca",
                            native.errors.len()
                        ),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ("kind", format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certs("client_cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| ("client_key", format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ("client_key", format!("does not fit client_cert: {e}")))?
            }
            (Some(_), None) => return Err(("client_key", "is required with client_cert".into())),
            (None, Some(_)) => return Err(("client_cert", "is required with client_key".into())),
        };
        Ok(Arc::new(config))
    }
}
