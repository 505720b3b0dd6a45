//! TLS termination: a certificate per SNI host (exact names, then `*.suffix` wildcards, then the
//! listener's first certificate), with HTTP/2 offered by ALPN.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::TlsFile;

/// Loads a PEM chain and key into a signing-ready key, or says what is wrong with them.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    pingora_rustls::install_default_crypto_provider();
    let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
    let loaded = pingora_rustls::load_certs_and_key_files(&cert_s, &key_s)
        .map_err(|e| format!("cannot load {cert_s} / {key_s}: {e}"))?;
    let Some((certs, key_der)) = loaded else {
        return Err(format!("no certificate or key found in {cert_s} / {key_s}"));
    };
    if certs.is_empty() {
        return Err(format!("no certificate found in {cert_s}"));
    }
    let provider =
        CryptoProvider::get_default().ok_or_else(|| "no TLS crypto provider".to_string())?;
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("unusable private key in {key_s}: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

/// Chooses a certificate by SNI.
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field(
                "wildcard",
                &self.wildcard.iter().map(|w| &w.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SniResolver {
    /// Builds the resolver from a validated listener's TLS section.
    pub fn new(tls: &TlsFile) -> Result<SniResolver, String> {
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        let mut default = None;
        for c in &tls.certificates {
            let key = load_certified_key(&c.cert, &c.key)?;
            default.get_or_insert_with(|| key.clone());
            for h in &c.hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_string(), key.clone())),
                    None => {
                        exact.insert(h, key.clone());
                    }
                }
            }
        }
        wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        let default = default.ok_or_else(|| "no certificates".to_string())?;
        Ok(SniResolver {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for `sni` (or the default).
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|s| s.to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.ends_with(suffix.as_str()) && name.len() > suffix.len())
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Pingora TLS settings for a listener.
pub fn settings(tls: &TlsFile) -> Result<TlsSettings, String> {
    let resolver = SniResolver::new(tls)?;
    let mut s = TlsSettings::intermediate("", "").map_err(|e| e.to_string())?;
    s.set_cert_resolver(Arc::new(resolver));
    if tls.http2 {
        s.enable_h2();
    }
    Ok(s)
}
