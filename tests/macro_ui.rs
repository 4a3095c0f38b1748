//! One compile-fail case per `#[rpc_service]` diagnostic (tests/ui/*.rs, with the
//! expected message and span in the .stderr next to each).

#[test]
fn diagnostics() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
