//! The 64-byte ZMTP 3 greeting.
//!
//! | offset | content |
//! |---|---|
//! | 0 | `0xFF` |
//! | 1..=8 | padding (libzmq: identity length + 1, big-endian); never interpreted |
//! | 9 | `0x7F` (only bit 0 matters) |
//! | 10 | major version |
//! | 11 | minor version |
//! | 12..32 | mechanism name, ASCII, NUL padded |
//! | 32 | as-server |
//! | 33..64 | filler, zeros |

use super::ZmtpError;

/// Length of a ZMTP 3 greeting.
pub const GREETING_LEN: usize = 64;

/// Length of the mechanism field.
/// Size of the greeting's mechanism field.
pub const MECHANISM_LEN: usize = 20;

/// A decoded greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// Major version (3 for every peer we accept).
    pub major: u8,
    /// Minor version: 0 for ZMTP 3.0 (libzmq <= 4.3.2), 1 for ZMTP 3.1.
    pub minor: u8,
    /// The mechanism name, NUL padded.
    pub mechanism: [u8; MECHANISM_LEN],
    /// The as-server flag (always false for NULL).
    pub as_server: bool,
}

impl Greeting {
    /// Our greeting: ZMTP 3.1, NULL mechanism.
    pub fn null() -> Greeting {
        let mut mechanism = [0u8; MECHANISM_LEN];
        mechanism[..4].copy_from_slice(b"NULL");
        Greeting {
            major: 3,
            minor: 1,
            mechanism,
            as_server: false,
        }
    }

    /// The mechanism name without its NUL padding.
    pub fn mechanism_name(&self) -> &[u8] {
        let end = self
            .mechanism
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MECHANISM_LEN);
        &self.mechanism[..end]
    }

    /// Encodes the 64 bytes.
    pub fn encode(&self) -> [u8; GREETING_LEN] {
        let mut out = [0u8; GREETING_LEN];
        out[0] = 0xFF;
        // Padding bytes 1..=8: libzmq writes its identity length + 1 here; the value is
        // never read by anyone, so we send 0x00..01 like an empty identity does.
        out[8] = 0x01;
        out[9] = 0x7F;
        out[10] = self.major;
        out[11] = self.minor;
        out[12..32].copy_from_slice(&self.mechanism);
        out[32] = u8::from(self.as_server);
        out
    }

    /// Checks a greeting prefix as soon as its bytes arrive, so that garbage is refused
    /// after one byte instead of after 64. `prefix` may be any length up to 64.
    pub fn check_prefix(prefix: &[u8]) -> Result<(), ZmtpError> {
        if let Some(&b) = prefix.first() {
            if b != 0xFF {
                return Err(ZmtpError::BadSignature);
            }
        }
        if let Some(&b) = prefix.get(9) {
            if b & 0x01 != 0x01 {
                return Err(ZmtpError::BadSignature);
            }
        }
        if let Some(&major) = prefix.get(10) {
            if major < 3 {
                return Err(ZmtpError::UnsupportedVersion {
                    major,
                    minor: prefix.get(11).copied().unwrap_or(0),
                });
            }
        }
        Ok(())
    }

    /// Decodes a full greeting. Any minor version is accepted, and any major >= 3 (a
    /// newer peer downgrades to us, as the spec says).
    pub fn decode(buf: &[u8; GREETING_LEN]) -> Result<Greeting, ZmtpError> {
        Self::check_prefix(buf)?;
        let mut mechanism = [0u8; MECHANISM_LEN];
        mechanism.copy_from_slice(&buf[12..32]);
        Ok(Greeting {
            major: buf[10],
            minor: buf[11],
            mechanism,
            as_server: buf[32] == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The greeting pyzmq 27 (libzmq 4.3.5) sends for a socket without identity.
    const LIBZMQ_GREETING: [u8; 64] = {
        let mut g = [0u8; 64];
        g[0] = 0xFF;
        g[8] = 0x01;
        g[9] = 0x7F;
        g[10] = 3;
        g[11] = 1;
        g[12] = b'N';
        g[13] = b'U';
        g[14] = b'L';
        g[15] = b'L';
        g
    };

    #[test]
    fn ours_matches_libzmq_bytes() {
        assert_eq!(Greeting::null().encode(), LIBZMQ_GREETING);
    }

    #[test]
    fn decodes_libzmq_and_ignores_padding() {
        let mut g = LIBZMQ_GREETING;
        g[1..9].copy_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9]);
        let d = Greeting::decode(&g).unwrap();
        assert_eq!((d.major, d.minor), (3, 1));
        assert_eq!(d.mechanism_name(), b"NULL");
        assert!(!d.as_server);
    }

    #[test]
    fn accepts_zmtp_3_0() {
        let mut g = LIBZMQ_GREETING;
        g[11] = 0;
        assert_eq!(Greeting::decode(&g).unwrap().minor, 0);
    }

    #[test]
    fn rejects_garbage_early() {
        assert_eq!(Greeting::check_prefix(b"G"), Err(ZmtpError::BadSignature));
        assert!(Greeting::check_prefix(&[0xFF, 0, 0]).is_ok());
        let mut v2 = LIBZMQ_GREETING;
        v2[10] = 2;
        assert!(matches!(
            Greeting::check_prefix(&v2[..11]),
            Err(ZmtpError::UnsupportedVersion { major: 2, .. })
        ));
        let mut bad9 = LIBZMQ_GREETING;
        bad9[9] = 0x7E;
        assert_eq!(Greeting::decode(&bad9), Err(ZmtpError::BadSignature));
    }
}
