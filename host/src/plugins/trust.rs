//! Signed plugins, opt in: with `trusted_keys` in the config, a version is
//! accepted only when `<name>.wasm.sig` beside it holds a detached ed25519
//! signature over its exact bytes by one of those keys. Checked before
//! anything is compiled; a refused version is rejected with the reason like
//! any bad module, and the version being served keeps serving.
//!
//! Text formats, one line each: a public key `ed25519:<base64 of 32 bytes>`
//! (what `trusted_keys` lists), a signature file `ed25519:<base64 of 64
//! bytes>`, a secret key file `ed25519-secret:<base64 of the 32-byte seed>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

const PUBLIC: &str = "ed25519:";
const SECRET: &str = "ed25519-secret:";

/// The keys versions must be signed by.
#[derive(Debug, Clone)]
pub struct Trust {
    keys: Vec<VerifyingKey>,
}

fn decode<const N: usize>(text: &str, prefix: &str, what: &str) -> Result<[u8; N], String> {
    let body = text
        .trim()
        .strip_prefix(prefix)
        .ok_or_else(|| format!("{what} does not start with `{prefix}`"))?;
    let bytes = B64
        .decode(body)
        .map_err(|e| format!("{what} is not base64 after `{prefix}`: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{what} holds {} bytes, not {N}", b.len()))
}

impl Trust {
    /// The policy for `keys` (`ed25519:<base64>` each).
    pub fn parse(keys: &[String]) -> Result<Trust, String> {
        let keys = keys
            .iter()
            .map(|k| {
                let bytes = decode::<32>(k, PUBLIC, &format!("trusted key `{k}`"))?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| format!("trusted key `{k}` is not an ed25519 key: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Trust { keys })
    }

    /// Whether `signature` (the `.sig` file's text, if there is one) is a
    /// trusted key's signature over `module`; the reason if not.
    pub fn verify(&self, module: &[u8], signature: Option<&str>) -> Result<(), String> {
        let Some(signature) = signature else {
            return Err(
                "unsigned: trusted_keys is set and there is no `.wasm.sig` beside the module; sign it with `linecook plugins sign`".into(),
            );
        };
        let bytes = decode::<64>(signature, PUBLIC, "the signature file")?;
        let signature = Signature::from_bytes(&bytes);
        if self
            .keys
            .iter()
            .any(|key| key.verify_strict(module, &signature).is_ok())
        {
            Ok(())
        } else {
            Err("the signature does not verify with any trusted key: signed by another key, or the module changed after it was signed".into())
        }
    }
}

/// A new key pair: (secret key file text, public key text).
pub fn keygen() -> (String, String) {
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    (
        format!("{SECRET}{}\n", B64.encode(seed)),
        format!("{PUBLIC}{}", B64.encode(key.verifying_key().as_bytes())),
    )
}

/// The signature file text for `module` signed with the secret key file
/// text `secret`, and the public key that verifies it.
pub fn sign(secret: &str, module: &[u8]) -> Result<(String, String), String> {
    let seed = decode::<32>(secret, SECRET, "the secret key file")?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        format!("{PUBLIC}{}\n", B64.encode(key.sign(module).to_bytes())),
        format!("{PUBLIC}{}", B64.encode(key.verifying_key().as_bytes())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_keys_signature_over_the_exact_bytes_passes() {
        let (secret, public) = keygen();
        let (other_secret, _) = keygen();
        let trust = Trust::parse(std::slice::from_ref(&public)).unwrap();
        let module = b"\0asm\x0d\0\x01\0 pretend component";
        let (signature, signer) = sign(&secret, module).unwrap();
        assert_eq!(signer, public);
        assert_eq!(trust.verify(module, Some(&signature)), Ok(()));

        let mut tampered = module.to_vec();
        tampered[10] ^= 1;
        assert!(trust.verify(&tampered, Some(&signature)).is_err());
        let (foreign, _) = sign(&other_secret, module).unwrap();
        assert!(
            trust
                .verify(module, Some(&foreign))
                .unwrap_err()
                .contains("any trusted key")
        );
        assert!(
            trust
                .verify(module, None)
                .unwrap_err()
                .starts_with("unsigned")
        );
        assert!(trust.verify(module, Some("ed25519:nope")).is_err());
        assert!(Trust::parse(&["rsa:abc".into()]).is_err());
        assert!(Trust::parse(&["ed25519:AAAA".into()]).is_err());
    }
}
