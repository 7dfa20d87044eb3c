//! TLS for SIP signalling (RFC 3261 §26.3.1, RFC 5630's `sip:…;transport=tls` form): the
//! certificate we present on `tls:` listen addresses, and how we check the carriers we call
//! over TLS.
//!
//! Everything here is read and checked once, when the configuration is loaded, so that a key
//! file that cannot be read or a certificate that does not parse is a `config check` error
//! with the file named, never a surprise on the first call. The crypto is rustls on *ring*
//! (no C toolchain beyond the one the machine has, no OpenSSL).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

/// The provider every configuration here is built on: *ring*, which builds with the C
/// compiler alone (aws-lc-rs, rustls' default, wants more of the machine). rustls marks it
/// deprecated only because it has no post-quantum key exchange, which no SIP peer we meet
/// offers yet; moving is a feature switch in Cargo.toml.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain in a PEM file, or why there is none.
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read certificates: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1), or why there is none.
fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: cannot read a private key: {e}", path.display()))
}

/// What we present to callers and carriers that reach us on a `tls:` listen address.
pub fn server(cert: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = certs(cert)?;
    let key = key(key_file)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} and {}: the key does not go with the certificate: {e}",
                cert.display(),
                key_file.display()
            )
        })?;
    Ok(Arc::new(cfg))
}

/// How we check one carrier: the CA to trust (the system's roots when none is given) and
/// the client certificate to present if the carrier asks for one.
pub fn client(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system root certificates were found (install ca-certificates, or set the gateway's tls.ca)"
                        .into(),
                );
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let cfg = match identity {
        Some((cert, key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| {
                format!(
                    "{} and {}: not a usable client certificate: {e}",
                    cert.display(),
                    key_file.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The name a carrier's certificate must carry: a DNS name (sent as SNI) or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("`{name}` is neither a DNS name nor an IP address"))
}

/// One carrier reached over TLS: how its certificate is checked and the name it must carry.
#[derive(Clone)]
pub struct Peer {
    /// Trust roots and our client certificate.
    pub config: Arc<rustls::ClientConfig>,
    /// SNI and the name verified.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Peer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_and_a_client_trusting_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path());
        assert!(server(&cert, &key).is_ok());
        assert!(client(Some(&cert), None).is_ok());
        assert!(client(Some(&cert), Some((&cert, &key))).is_ok());
    }

    #[test]
    fn unreadable_or_mismatched_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path());
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, other_key) = pair(&other);
        let missing = dir.path().join("missing.pem");
        let e = server(&missing, &key).unwrap_err();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = server(&cert, &missing).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let e = server(&cert, &other_key).unwrap_err();
        assert!(e.contains("does not go with"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = server(&junk, &key).unwrap_err();
        assert!(
            e.contains("junk.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = client(Some(&junk), None).unwrap_err();
        assert!(e.contains("junk.pem"), "{e}");
    }

    #[test]
    fn names_and_addresses_are_server_names_and_garbage_is_not() {
        assert!(server_name("carrier.example").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("not a name").is_err());
    }
}
