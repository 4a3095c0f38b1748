//! Z85 (ZeroMQ RFC 32): the text form of CURVE keys, as libzmq writes and reads them.
//!
//! Four bytes, big-endian, become five characters of an 85-character alphabet; the
//! binary length must be a multiple of 4 and the text's of 5.

/// The alphabet of RFC 32.
const ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Why a Z85 text could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Z85Error {
    /// The text's length is not a multiple of 5.
    #[error("Z85 text of {0} characters: not a multiple of 5")]
    Length(usize),
    /// A character outside the alphabet.
    #[error("not a Z85 character: {0:?}")]
    Character(char),
    /// Five characters that stand for more than 32 bits.
    #[error("Z85 group out of range")]
    Overflow,
}

/// Encodes `data`; `None` when its length is not a multiple of 4.
pub fn encode(data: &[u8]) -> Option<String> {
    if !data.len().is_multiple_of(4) {
        return None;
    }
    let mut out = String::with_capacity(data.len() / 4 * 5);
    for chunk in data.chunks_exact(4) {
        let mut v = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut group = [0u8; 5];
        for c in group.iter_mut().rev() {
            *c = ALPHABET[(v % 85) as usize];
            v /= 85;
        }
        out.extend(group.iter().map(|&c| c as char));
    }
    Some(out)
}

/// Decodes a Z85 text.
pub fn decode(text: &str) -> Result<Vec<u8>, Z85Error> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(5) {
        return Err(Z85Error::Length(text.chars().count()));
    }
    let mut out = Vec::with_capacity(bytes.len() / 5 * 4);
    for group in bytes.chunks_exact(5) {
        let mut v: u64 = 0;
        for &c in group {
            let digit = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(Z85Error::Character(c as char))?;
            v = v * 85 + digit as u64;
        }
        let v = u32::try_from(v).map_err(|_| Z85Error::Overflow)?;
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rfc_example() {
        let data = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(encode(&data).unwrap(), "HelloWorld");
        assert_eq!(decode("HelloWorld").unwrap(), data);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(encode(&[1, 2, 3]), None);
        assert_eq!(decode("Hello"), Ok(vec![0x86, 0x4F, 0xD2, 0x6F]));
        assert_eq!(decode("Hell"), Err(Z85Error::Length(4)));
        assert_eq!(decode("Hell~"), Err(Z85Error::Character('~')));
        assert_eq!(decode("#####"), Err(Z85Error::Overflow));
    }

    proptest! {
        #[test]
        fn round_trips(words in proptest::collection::vec(any::<u32>(), 0..20)) {
            let data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            let text = encode(&data).unwrap();
            prop_assert_eq!(text.len(), data.len() / 4 * 5);
            prop_assert_eq!(decode(&text).unwrap(), data);
        }
    }
}
