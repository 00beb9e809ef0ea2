//! RSA signing keys: generated on first start into the data folder (file mode 0600), reused
//! across restarts, rotated with `switchboard keys rotate`. A rotated-out key stays published
//! until every token it signed has expired. The memory store uses an ephemeral key. Only the
//! server creates the first key: the `token` and `keys rotate` commands read what a server made
//! (a wrong `--store` would otherwise give keys no server publishes).

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The file in the data folder that holds the private keys.
pub const KEY_FILE: &str = "signing-keys.json";

/// How long a retired key stays published: longer than any token lives (tokens: 1 h,
/// notification tokens: 65 min by default).
const RETIRED_KEY_RETENTION_SECS: i64 = 2 * 3600;

pub struct SigningKey {
    pub kid: String,
    created_at: i64,
    retired_at: Option<i64>,
    pem: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    n: String,
    e: String,
    /// A self-signed certificate of the key (DER, base64), published as the JWK's `x5c`.
    x5c: String,
    /// Its SHA-1 thumbprint (base64url): the JWK's and the tokens' `x5t`, as Microsoft's keys
    /// have both `kid` and `x5t`.
    pub x5t: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    kid: String,
    created_at: i64,
    retired_at: Option<i64>,
    private_key_pem: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a key")]
    Generate,
    #[error("the key file {path} is unreadable: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot write the key file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "no signing keys in {}: {KEY_FILE} is missing there. A server creates it when it first starts on a sqlite:// store in that folder; give the --store (or SWITCHBOARD_STORE) of the server whose tokens you want",
        .dir.display()
    )]
    Missing { dir: PathBuf },
}

fn pem_of(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn der_of(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).ok()
}

impl SigningKey {
    fn generate(now: i64) -> Result<Self, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        let der = pair.as_der().map_err(|_| KeyError::Generate)?;
        let pem = pem_of(der.as_ref());
        Self::from_stored(StoredKey {
            kid: String::new(),
            created_at: now,
            retired_at: None,
            private_key_pem: pem,
        })
        .ok_or(KeyError::Generate)
    }

    fn from_stored(s: StoredKey) -> Option<Self> {
        let der = der_of(&s.private_key_pem)?;
        let pair = KeyPair::from_pkcs8(&der).ok()?;
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let kid = if s.kid.is_empty() {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, n.as_bytes());
            URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
        } else {
            s.kid
        };
        let cert = certificate(&s.private_key_pem, &kid, s.created_at)?;
        let thumbprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        Some(SigningKey {
            x5c: STANDARD.encode(&cert),
            x5t: URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
            kid,
            created_at: s.created_at,
            retired_at: s.retired_at,
            encoding: EncodingKey::from_rsa_pem(s.private_key_pem.as_bytes()).ok()?,
            decoding: DecodingKey::from_rsa_components(&n, &e).ok()?,
            pem: s.private_key_pem,
            n,
            e,
        })
    }

    fn stored(&self) -> StoredKey {
        StoredKey {
            kid: self.kid.clone(),
            created_at: self.created_at,
            retired_at: self.retired_at,
            private_key_pem: self.pem.clone(),
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "x5t": self.x5t,
               "n": self.n, "e": self.e, "x5c": [self.x5c]})
    }
}

/// A self-signed X.509 certificate of a signing key (DER), the same at every start: its serial
/// comes from the key id and its validity from the key's creation (RSA PKCS#1 v1.5 signatures
/// are deterministic).
fn certificate(pem: &str, kid: &str, created_at: i64) -> Option<Vec<u8>> {
    let key = rcgen::KeyPair::from_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256).ok()?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        rcgen::DnType::CommonName,
        "Switchboard notification signing",
    );
    params.distinguished_name = name;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(kid.as_bytes()));
    let start = time::OffsetDateTime::from_unix_timestamp(created_at).ok()?;
    params.not_before = start;
    params.not_after = start + time::Duration::days(5 * 365);
    Some(params.self_signed(&key).ok()?.der().to_vec())
}

/// The keys Switchboard signs with. The newest key that is not retired signs; every key still
/// within its retention is published.
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl KeyRing {
    /// One fresh key that lives only in this process.
    pub fn ephemeral() -> Result<Self, KeyError> {
        Ok(KeyRing {
            keys: vec![SigningKey::generate(now())?],
        })
    }

    /// Reads the keys a server created in `dir`; [`KeyError::Missing`] if there are none.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            return Err(KeyError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        let ring = Self::read(&path)?;
        if ring.keys.is_empty() {
            return Err(KeyError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        Ok(ring)
    }

    /// Reads the keys in `dir`, creating the first one if there is none (a server's start).
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        if path.exists() {
            let ring = Self::read(&path)?;
            if !ring.keys.is_empty() {
                return Ok(ring);
            }
        }
        let ring = KeyRing {
            keys: vec![SigningKey::generate(now())?],
        };
        ring.write(dir)?;
        Ok(ring)
    }

    fn read(path: &Path) -> Result<Self, KeyError> {
        let unreadable = |reason: String| KeyError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        let keys = file
            .keys
            .into_iter()
            .map(|k| {
                let kid = k.kid.clone();
                SigningKey::from_stored(k)
                    .ok_or_else(|| unreadable(format!("key {kid} is invalid")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyRing { keys })
    }

    /// Writes the key file with mode 0600, atomically (a temporary file, then a rename).
    fn write(&self, dir: &Path) -> Result<(), KeyError> {
        let path = dir.join(KEY_FILE);
        let err = |e: std::io::Error| KeyError::Write {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let file = KeyFile {
            keys: self.keys.iter().map(SigningKey::stored).collect(),
        };
        let text = serde_json::to_string_pretty(&file).expect("key file serializes");
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// Adds a new signing key in `dir` and retires the current one, which stays published until
    /// tokens signed with it have expired. Returns the new key's id. The folder must hold keys
    /// already ([`KeyError::Missing`] otherwise).
    pub fn rotate(dir: &Path) -> Result<String, KeyError> {
        let mut ring = Self::load(dir)?;
        let now = now();
        for k in &mut ring.keys {
            k.retired_at.get_or_insert(now);
        }
        ring.keys.retain(|k| {
            k.retired_at
                .is_none_or(|t| now - t < RETIRED_KEY_RETENTION_SECS)
        });
        let key = SigningKey::generate(now)?;
        let kid = key.kid.clone();
        ring.keys.push(key);
        ring.write(dir)?;
        Ok(kid)
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        self.keys
            .iter()
            .rev()
            .find(|k| k.retired_at.is_none())
            .or(self.keys.last())
            .expect("a key ring is never empty")
    }

    /// A published key by its id.
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        let now = now();
        self.keys.iter().find(|k| {
            k.kid == kid
                && k.retired_at
                    .is_none_or(|t| now - t < RETIRED_KEY_RETENTION_SECS)
        })
    }

    /// The published keys as a JWKS document.
    pub fn jwks(&self) -> Value {
        let now = now();
        let keys: Vec<Value> = self
            .keys
            .iter()
            .filter(|k| {
                k.retired_at
                    .is_none_or(|t| now - t < RETIRED_KEY_RETENTION_SECS)
            })
            .map(SigningKey::jwk)
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_private_and_read_back_the_same() {
        let dir = std::env::temp_dir().join(format!("sb-keys-{}", uuid::Uuid::new_v4()));
        let first = KeyRing::load_or_create(&dir).unwrap();
        let again = KeyRing::load_or_create(&dir).unwrap();
        assert_eq!(first.active().kid, again.active().kid);
        assert_eq!(
            first.active().x5t,
            again.active().x5t,
            "the same certificate"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rotation_signs_with_a_new_key_and_keeps_the_old_one_published() {
        let dir = std::env::temp_dir().join(format!("sb-keys-{}", uuid::Uuid::new_v4()));
        let old = KeyRing::load_or_create(&dir).unwrap().active().kid.clone();
        let new = KeyRing::rotate(&dir).unwrap();
        let ring = KeyRing::load(&dir).unwrap();
        assert_ne!(old, new);
        assert_eq!(ring.active().kid, new);
        assert!(ring.find(&old).is_some());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn reading_or_rotating_a_folder_without_keys_fails_and_creates_nothing() {
        let dir = std::env::temp_dir().join(format!("sb-keys-{}", uuid::Uuid::new_v4()));
        for err in [KeyRing::load(&dir).err(), KeyRing::rotate(&dir).err()] {
            let said = err.expect("no keys to read").to_string();
            assert!(said.contains(&dir.display().to_string()), "{said}");
            assert!(said.contains("no signing keys"), "{said}");
        }
        assert!(!dir.exists(), "nothing was created");
    }
}
