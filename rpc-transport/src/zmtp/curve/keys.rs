//! CURVE keys: [`PublicKey`] and [`KeyPair`], in Z85 (RFC 32) or raw, as libzmq
//! writes them; secret keys zeroized when dropped.

use std::fmt;
use std::str::FromStr;

use crypto_box::aead::OsRng;
use zeroize::Zeroizing;

use super::KEY;
use crate::zmtp::z85::{self, Z85Error};

/// A CURVE public key (32 octets).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub(super) [u8; KEY]);

impl PublicKey {
    /// From its 32 octets.
    pub fn from_bytes(bytes: [u8; KEY]) -> PublicKey {
        PublicKey(bytes)
    }

    /// Its 32 octets.
    pub fn as_bytes(&self) -> &[u8; KEY] {
        &self.0
    }

    /// Its Z85 text (40 characters), as `zmq_curve_keypair` writes it.
    pub fn to_z85(&self) -> String {
        z85::encode(&self.0).unwrap_or_default()
    }

    pub(super) fn to_crypto(self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from_bytes(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not valid Z85.
    #[error(transparent)]
    Z85(#[from] Z85Error),
    /// Not 32 octets (40 Z85 characters).
    #[error("a CURVE key is 32 octets (40 Z85 characters), not {0}")]
    Length(usize),
}

fn key_bytes(text: &str) -> Result<Zeroizing<[u8; KEY]>, KeyError> {
    let raw = Zeroizing::new(z85::decode(text)?);
    let bytes: [u8; KEY] = raw[..]
        .try_into()
        .map_err(|_| KeyError::Length(raw.len()))?;
    Ok(Zeroizing::new(bytes))
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// From its Z85 text.
    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        Ok(PublicKey(*key_bytes(text)?))
    }
}

/// A CURVE key pair: a public key and its secret key (zeroized when dropped).
#[derive(Clone)]
pub struct KeyPair {
    pub(super) public: PublicKey,
    pub(super) secret: crypto_box::SecretKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new key pair from the OS's random source.
    pub fn generate() -> KeyPair {
        KeyPair::from_secret(crypto_box::SecretKey::generate(&mut OsRng))
    }

    /// The key pair of a secret key given as 32 octets.
    pub fn from_secret_bytes(secret: [u8; KEY]) -> KeyPair {
        KeyPair::from_secret(crypto_box::SecretKey::from_bytes(secret))
    }

    /// The key pair of a secret key in Z85 (as `zmq_curve_keypair` writes it); the
    /// public key is derived from it.
    pub fn from_secret_z85(text: &str) -> Result<KeyPair, KeyError> {
        Ok(KeyPair::from_secret_bytes(*key_bytes(text)?))
    }

    fn from_secret(secret: crypto_box::SecretKey) -> KeyPair {
        KeyPair {
            public: PublicKey(secret.public_key().to_bytes()),
            secret,
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret key in Z85 (to store it; handle with care).
    pub fn secret_z85(&self) -> String {
        let bytes = Zeroizing::new(self.secret.to_bytes());
        z85::encode(&bytes[..]).unwrap_or_default()
    }
}
