//! Any bytes as a request or reply header: a header or an error, never a panic. What
//! the fast reader accepts, serde must read the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_core::{ReplyHeader, RequestHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = RequestHeader::from_bytes(data) {
        let again = RequestHeader::from_bytes(&h.to_bytes()).expect("re-encoded header reads");
        assert_eq!(again, h);
    }
    if let Ok(h) = ReplyHeader::from_bytes(data) {
        let again = ReplyHeader::from_bytes(&h.to_bytes()).expect("re-encoded header reads");
        assert_eq!(again, h);
    }
});
