//! Secrets a node sends back through SSM Run Command, sealed so the command output (readable for
//! 30 days by anyone allowed `ssm:GetCommandInvocation`, which can't be scoped to resources)
//! never holds them in clear.
//!
//! The stage generates a fresh RSA-2048 key pair per command and passes the public key to the
//! node as a parameter; the node seals with what Ubuntu ships (`openssl`, in
//! `scripts/kubeconfig.sh`): a random 256-bit AES key and a random 256-bit HMAC key, wrapped with
//! RSA-OAEP (SHA-256, MGF1-SHA-256); the secret in AES-256-CTR under a random 128-bit IV; an
//! HMAC-SHA-256 over IV ‖ ciphertext (encrypt-then-MAC). It prints one line:
//!
//! ```text
//! MECPLANE_SEALED v1 <wrapped keys> <iv> <ciphertext> <mac>      (each base64)
//! ```
//!
//! [`TransportKey::open`] checks the MAC (in constant time) before it decrypts.

use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext, UnboundCipherKey, AES_256};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::{digest, hmac};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The first word of a sealed line.
pub const MARKER: &str = "MECPLANE_SEALED";
/// The format version the node writes and this module reads.
pub const VERSION: &str = "v1";

/// 16 hex characters of the SHA-256 of `data`: names a public key or a sealed line in a
/// command's idempotency key.
pub fn short_digest(data: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, data);
    hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `MECPLANE_SEALED` line in a command's output, if there is one (not opened: a join token
/// is opened only by the node it is sealed to).
pub fn sealed_line(output: &str) -> Option<&str> {
    output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(MARKER) && l.split_whitespace().count() == 6)
}

/// Why a sealed secret could not be opened (never says anything about its content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no {MARKER} line in the output")]
    Missing,
    #[error("the {MARKER} line is malformed: {0}")]
    Malformed(&'static str),
    #[error("the sealed secret does not match this command's key (MAC check failed)")]
    Mismatch,
    #[error("the transport key is unusable")]
    Key,
}

/// A per-command RSA key pair. The private half lives only in this value and, between polls, in
/// a SecureString parameter of the cluster (encrypted with the project's KMS key).
pub struct TransportKey {
    private: PrivateDecryptingKey,
}

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TransportKey({})", self.fingerprint())
    }
}

impl TransportKey {
    /// A fresh key pair.
    pub fn generate() -> Result<Self, SealError> {
        let private =
            PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| SealError::Key)?;
        Ok(TransportKey { private })
    }

    /// The private key as base64 PKCS#8 (what the SecureString holds).
    pub fn to_pkcs8_base64(&self) -> Result<String, SealError> {
        let der: Pkcs8V1Der = self.private.as_der().map_err(|_| SealError::Key)?;
        Ok(B64.encode(der.as_ref()))
    }

    /// The key pair back from [`Self::to_pkcs8_base64`].
    pub fn from_pkcs8_base64(text: &str) -> Result<Self, SealError> {
        let der = B64.decode(text.trim()).map_err(|_| SealError::Key)?;
        let private = PrivateDecryptingKey::from_pkcs8(&der).map_err(|_| SealError::Key)?;
        Ok(TransportKey { private })
    }

    /// The public key as base64 X.509 SubjectPublicKeyInfo DER (what the node gets).
    pub fn public_base64(&self) -> String {
        B64.encode(self.public_der())
    }

    fn public_der(&self) -> Vec<u8> {
        let der: PublicKeyX509Der = self
            .private
            .public_key()
            .as_der()
            .expect("an RSA public key always encodes");
        der.as_ref().to_vec()
    }

    /// 16 hex characters of the public key's SHA-256: names the key in a command's idempotency
    /// key, so a command sealed to another key is never adopted.
    pub fn fingerprint(&self) -> String {
        short_digest(&self.public_der())
    }

    /// Finds the sealed line in `output` and opens it.
    pub fn open(&self, output: &str) -> Result<String, SealError> {
        let line = output
            .lines()
            .find(|l| l.starts_with(MARKER))
            .ok_or(SealError::Missing)?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, version, wrapped, iv, ciphertext, mac] = fields[..] else {
            return Err(SealError::Malformed("expected six fields"));
        };
        if version != VERSION {
            return Err(SealError::Malformed("unknown version"));
        }
        let decode = |field: &str| {
            B64.decode(field)
                .map_err(|_| SealError::Malformed("not base64"))
        };
        let (wrapped, iv, mut ciphertext, mac) = (
            decode(wrapped)?,
            decode(iv)?,
            decode(ciphertext)?,
            decode(mac)?,
        );
        let iv: [u8; 16] = iv
            .try_into()
            .map_err(|_| SealError::Malformed("the IV is not 16 bytes"))?;

        let oaep =
            OaepPrivateDecryptingKey::new(self.private.clone()).map_err(|_| SealError::Key)?;
        let mut keys = vec![0u8; oaep.min_output_size()];
        let keys = oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, &wrapped, &mut keys, None)
            .map_err(|_| SealError::Mismatch)?;
        if keys.len() != 64 {
            return Err(SealError::Malformed("the wrapped keys are not 64 bytes"));
        }
        let (enc_key, mac_key) = keys.split_at(32);

        let mut signed = iv.to_vec();
        signed.extend_from_slice(&ciphertext);
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, mac_key), &signed, &mac)
            .map_err(|_| SealError::Mismatch)?;

        let key = UnboundCipherKey::new(&AES_256, enc_key).map_err(|_| SealError::Key)?;
        let plain = DecryptingKey::ctr(key)
            .map_err(|_| SealError::Key)?
            .decrypt(&mut ciphertext, DecryptionContext::Iv128(iv.into()))
            .map_err(|_| SealError::Mismatch)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed("not UTF-8"))
    }
}

/// The node's side in Rust (what `scripts/kubeconfig.sh` does with openssl): the sealed line for
/// `secret`. For the in-memory fakes and the tests; nodes run the script.
#[cfg(any(test, feature = "testing"))]
pub fn seal(public_base64: &str, secret: &str) -> Result<String, SealError> {
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext};
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};

    let der = B64.decode(public_base64).map_err(|_| SealError::Key)?;
    let public = PublicEncryptingKey::from_der(&der).map_err(|_| SealError::Key)?;
    let keys: [u8; 64] = rand::random();
    let iv: [u8; 16] = rand::random();
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| SealError::Key)?;
    let mut wrapped = vec![0u8; oaep.ciphertext_size()];
    let wrapped = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, &keys, &mut wrapped, None)
        .map_err(|_| SealError::Key)?
        .to_vec();
    let mut data = secret.as_bytes().to_vec();
    let key = UnboundCipherKey::new(&AES_256, &keys[..32]).map_err(|_| SealError::Key)?;
    EncryptingKey::ctr(key)
        .and_then(|k| k.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into())))
        .map_err(|_| SealError::Key)?;
    let mut signed = iv.to_vec();
    signed.extend_from_slice(&data);
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &keys[32..]), &signed);
    Ok(format!(
        "{MARKER} {VERSION} {} {} {} {}",
        B64.encode(wrapped),
        B64.encode(iv),
        B64.encode(&data),
        B64.encode(mac.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(line: &str) -> String {
        format!("noise\n{line}\nMECPLANE_RESULT kubeconfig=sealed\n")
    }

    /// Flips one bit of the ciphertext field of a sealed line.
    fn tampered(line: &str) -> String {
        let mut fields: Vec<String> = line.split(' ').map(String::from).collect();
        let mut ct = B64.decode(&fields[4]).unwrap();
        ct[0] ^= 1;
        fields[4] = B64.encode(ct);
        fields.join(" ")
    }

    #[test]
    fn opens_what_was_sealed_to_it_and_survives_storage() {
        let key = TransportKey::generate().unwrap();
        let stored = TransportKey::from_pkcs8_base64(&key.to_pkcs8_base64().unwrap()).unwrap();
        assert_eq!(stored.fingerprint(), key.fingerprint());
        let secret = "apiVersion: v1\nusers:\n- user:\n    client-key-data: c2VjcmV0\n";
        let line = seal(&key.public_base64(), secret).unwrap();
        assert!(!line.contains("client-key-data"));
        assert_eq!(stored.open(&output(&line)).unwrap(), secret);
    }

    #[test]
    fn refuses_a_tampered_or_foreign_or_missing_seal() {
        let key = TransportKey::generate().unwrap();
        let other = TransportKey::generate().unwrap();
        assert_ne!(key.fingerprint(), other.fingerprint());
        let line = seal(&key.public_base64(), "secret").unwrap();
        assert_eq!(
            key.open(&output(&tampered(&line))),
            Err(SealError::Mismatch)
        );
        let foreign = seal(&other.public_base64(), "secret").unwrap();
        assert_eq!(key.open(&output(&foreign)), Err(SealError::Mismatch));
        assert_eq!(key.open("clusters: in clear\n"), Err(SealError::Missing));
        assert_eq!(
            key.open(&format!("{MARKER} v1 a b\n")),
            Err(SealError::Malformed("expected six fields"))
        );
        assert_eq!(
            key.open(&format!("{MARKER} v2 a b c d\n")),
            Err(SealError::Malformed("unknown version"))
        );
    }

    #[test]
    fn debug_shows_the_fingerprint_only() {
        let key = TransportKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("TransportKey({})", key.fingerprint()));
        assert!(!shown.contains(&key.to_pkcs8_base64().unwrap()[..20]));
    }
}
