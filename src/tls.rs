//! TLS on the same listener: a connection that opens with a TLS handshake gets TLS, any other
//! plain HTTP (Microsoft's token libraries accept only an `https` authority, and the JS Graph
//! client sends no `Authorization` header to an `http` URL).
//!
//! The certificate is `[tls] cert_file` / `key_file` when given. Otherwise Switchboard issues one
//! at start from its own local certificate authority, for `localhost`, `127.0.0.1`, `::1`, the
//! host of `public_url`, the listening address and every name in `[tls] names`. The authority
//! is created once and kept beside the store (`ca.pem`, `ca-key.pem` in the data folder), or in
//! a folder of the system's temporary folder for a memory store, so that a bot's machine trusts
//! it once; `GET /_switchboard/v1/ca.pem` serves it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// `[tls]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain to serve (PEM), instead of one from the local authority; relative
    /// to the config file's folder.
    pub cert_file: Option<String>,
    /// Its private key (PEM).
    pub key_file: Option<String>,
    /// More names (DNS names or IP addresses) the local authority's certificate is issued for.
    pub names: Vec<String>,
}

/// What the listener needs for TLS.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The local authority's certificate (PEM), when it issued ours.
    pub ca_pem: Option<String>,
    /// Where that certificate is kept, when it is.
    pub ca_file: Option<PathBuf>,
}

/// The local authority's files in its folder.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

impl Tls {
    /// TLS for a listener whose clients know it by `names` (with the defaults added), from the
    /// configured files or from the authority kept in `ca_dir`.
    pub fn setup(
        settings: &TlsSettings,
        config_dir: Option<&Path>,
        ca_dir: &Path,
        names: &[String],
    ) -> anyhow::Result<Tls> {
        let (chain, key, ca) = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => {
                let at = |f: &str| config_dir.map_or_else(|| PathBuf::from(f), |d| d.join(f));
                let (cert, key) = (at(cert), at(key));
                let chain = CertificateDer::pem_file_iter(&cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("[tls] cert_file {}", cert.display()))?;
                anyhow::ensure!(
                    !chain.is_empty(),
                    "[tls] cert_file {} holds no certificate",
                    cert.display()
                );
                let key = PrivateKeyDer::from_pem_file(&key)
                    .with_context(|| format!("[tls] key_file {}", key.display()))?;
                (chain, key, None)
            }
            (None, None) => {
                let mut all: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                for n in names.iter().chain(&settings.names) {
                    if !all.contains(n) {
                        all.push(n.clone());
                    }
                }
                let authority = Authority::load_or_create(ca_dir)?;
                let (chain, key) = authority.issue(&all)?;
                (chain, key, Some(authority))
            }
            _ => anyhow::bail!("[tls] needs both cert_file and key_file, or neither"),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the TLS certificate and key do not go together")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca.as_ref().map(|a| a.cert_pem.clone()),
            ca_file: ca.and_then(|a| a.file),
        })
    }
}

/// Where a store keeps its authority: its data folder, or (memory store) a folder of the
/// system's temporary folder, shared by every such server of this user.
pub fn ca_dir(data_dir: Option<&Path>) -> PathBuf {
    match data_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "default".into());
            std::env::temp_dir().join(format!("switchboard-ca-{user}"))
        }
    }
}

/// The local certificate authority: its certificate, and the issuer that signs with its key.
struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Where its certificate is kept (`None`: it could not be kept, and lives for this run).
    file: Option<PathBuf>,
}

impl Authority {
    /// The authority kept in `dir`, or a new one kept there. Two servers starting at once may
    /// both create one: the first to rename its folder into place wins, the other uses the
    /// winner's. One that cannot be kept (a folder not ours) lives for this run, logged.
    fn load_or_create(dir: &Path) -> anyhow::Result<Authority> {
        if let Some(a) = Self::load(dir)? {
            return Ok(a);
        }
        let (cert_pem, key) = Self::create()?;
        match Self::keep(dir, &cert_pem, &key) {
            Ok(()) => {}
            Err(e) => {
                if let Some(a) = Self::load(dir)? {
                    return Ok(a);
                }
                tracing::warn!(
                    "cannot keep the local certificate authority in {}: {e:#}; a new one is made at every start",
                    dir.display()
                );
                let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
                return Ok(Authority {
                    cert_pem,
                    issuer,
                    file: None,
                });
            }
        }
        Self::load(dir)?.context("the local certificate authority just written is gone")
    }

    fn load(dir: &Path) -> anyhow::Result<Option<Authority>> {
        let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
        // In a shared temporary folder another user could have put an authority of theirs:
        // only ours counts, its key readable by us alone.
        {
            use std::os::unix::fs::MetadataExt;
            let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
            let ours = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.uid(), m.mode()));
            if let (Some(me), Some((dir_uid, _)), Some((key_uid, key_mode))) =
                (me, ours(dir), ours(&key))
                && (dir_uid != me || key_uid != me || key_mode & 0o077 != 0)
            {
                anyhow::bail!(
                    "{} is not this user's own (its owner, or who may read its key, is wrong): remove it, or use a store in a folder of yours",
                    dir.display()
                );
            }
        }
        let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(&cert),
            std::fs::read_to_string(&key),
        ) else {
            return Ok(None);
        };
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("the local authority's key {}", key.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("the local authority's certificate {}", cert.display()))?;
        Ok(Some(Authority {
            cert_pem,
            issuer,
            file: Some(cert),
        }))
    }

    /// A new authority: a P-256 key and a self-signed CA certificate valid for ten years.
    fn create() -> anyhow::Result<(String, KeyPair)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Switchboard");
        name.push(
            DnType::CommonName,
            format!(
                "Switchboard local authority {}",
                &crate::domain::ids::new_guid()[..8]
            ),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key))
    }

    /// Writes the authority into `dir` whole: into a fresh folder beside it, renamed into place
    /// (or, when `dir` exists, its two files renamed in, the key first).
    fn keep(dir: &Path, cert_pem: &str, key: &KeyPair) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let write = |path: &Path, text: &str| -> std::io::Result<()> {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?
                .write_all(text.as_bytes())
        };
        let parent = dir.parent().unwrap_or(Path::new("."));
        let fresh = parent.join(format!(
            ".switchboard-ca-{}",
            crate::domain::ids::new_guid()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&fresh)?;
        let written = write(&fresh.join(CA_KEY), &key.serialize_pem())
            .and_then(|()| write(&fresh.join(CA_CERT), cert_pem));
        let placed = written.and_then(|()| {
            if dir.exists() {
                // A data folder: the files go in beside the store, unless another server's are
                // there already (they are kept).
                if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "another server created one first",
                    ));
                }
                std::fs::rename(fresh.join(CA_KEY), dir.join(CA_KEY))?;
                std::fs::rename(fresh.join(CA_CERT), dir.join(CA_CERT))
            } else {
                std::fs::rename(&fresh, dir)
            }
        });
        let _ = std::fs::remove_dir_all(&fresh);
        Ok(placed?)
    }

    /// A certificate for `names` (DNS names or IP addresses), valid for a year, with this
    /// authority's certificate after it in the chain.
    fn issue(
        &self,
        names: &[String],
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|n| n.trim_matches(|c| c == '[' || c == ']').to_string())
                .collect::<Vec<_>>(),
        )
        .context("a [tls] name is neither a DNS name nor an IP address")?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.signed_by(&key, &self.issuer)?;
        let ca = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .context("the local authority's certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .context("the certificate's key")?;
        Ok((vec![cert.der().clone(), ca], key))
    }
}

/// The host of a URL, when it has one (`https://bot.example:8443/x` → `bot.example`).
pub fn url_host(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    match parsed.host()? {
        url::Host::Domain(d) => Some(d.to_string()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// The name to issue for a listening address, unless it is every address.
pub fn listen_name(ip: IpAddr) -> Option<String> {
    (!ip.is_unspecified()).then(|| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_made_once_and_issues_for_every_name() {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", crate::domain::ids::new_guid()));
        let first = Authority::load_or_create(&dir).unwrap();
        let again = Authority::load_or_create(&dir).unwrap();
        assert_eq!(first.cert_pem, again.cert_pem, "kept, not made again");
        let names = vec![
            "localhost".to_string(),
            "10.0.0.7".into(),
            "bot.test".into(),
        ];
        let (chain, _) = again.issue(&names).unwrap();
        assert_eq!(chain.len(), 2);
        let text = String::from_utf8_lossy(chain[0].as_ref()).into_owned();
        assert!(
            text.contains("bot.test"),
            "the DNS name is in the certificate"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hosts_come_out_of_urls() {
        assert_eq!(
            url_host("https://bot.example:8443/x").as_deref(),
            Some("bot.example")
        );
        assert_eq!(url_host("http://[::1]:80").as_deref(), Some("::1"));
        assert_eq!(url_host("not a url"), None);
    }
}
