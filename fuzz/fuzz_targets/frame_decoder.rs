//! Any bytes, split anywhere, through the frame decoder (failing or discarding over
//! its limit, as the first byte's low bit says): a frame, "need more" or an error,
//! never a panic or an allocation past the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_transport::zmtp::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).max(1);
    let mut d = if cut & 1 == 0 {
        FrameDecoder::new(1 << 16)
    } else {
        FrameDecoder::discarding(1 << 16)
    };
    let mut src = BytesMut::new();
    for piece in rest.chunks(cut) {
        src.extend_from_slice(piece);
        loop {
            match d.decode(&mut src, 0) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(src.capacity() < (1 << 17) + rest.len());
    }
});
