//! Any bytes as a request or reply header: a header or an error, never a panic. What
//! the fast reader accepts, serde must read the same way. A reply header that reads
//! gives its id to the peek a client matches replies by.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_core::{ReplyHeader, RequestHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = RequestHeader::from_bytes(data) {
        let again = RequestHeader::from_bytes(&h.to_bytes()).expect("re-encoded header reads");
        assert_eq!(again, h);
    }
    let peeked = ReplyHeader::peek_id(data);
    if let Ok(h) = ReplyHeader::from_bytes(data) {
        assert_eq!(peeked, Some(h.id), "a header that reads is matched by its id");
        let again = ReplyHeader::from_bytes(&h.to_bytes()).expect("re-encoded header reads");
        assert_eq!(again, h);
    }
});
